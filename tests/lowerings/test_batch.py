"""Batch split: the planner on hand-made specs (chunks and declines), the rewrite of tiny models
checked on onnxruntime here (independently of convrewrite's verifier), a property over batch x
limit x conv form, and every emitted node and tensor re-checked against the target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convrewrite as cr
from convrewrite.conv import ConvSpec
from convrewrite.decline import Decline
from convrewrite.lowerings.batch import BatchSplit
from convrewrite.plan.batch import plan_batch_split
from convrewrite.target import load_target
from tests.conv_cases import conv_model, emitted_within, op_count, random_input, run


def spec(batch, op="Conv"):
    return ConvSpec(name="c", op_type=op, in_channels=4, out_channels=4, groups=1,
                    kernel_shape=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1),
                    input_shape=(batch, 4, 8, 8), output_shape=(batch, 4, 8, 8))


def batch_target(limit, **extra):
    return {"name": "batch", "conv": {"max_batch": limit}, **extra}


@pytest.mark.parametrize("batch, limit, chunks", [
    (2, 1, ((0, 1), (1, 2))),
    (5, 2, ((0, 2), (2, 4), (4, 5))),
    (7, 3, ((0, 3), (3, 5), (5, 7))),     # sizes differ by at most one
    (64, 32, ((0, 32), (32, 64))),
])
def test_plan_chunks(batch, limit, chunks):
    plan = plan_batch_split(spec(batch), load_target(batch_target(limit)))
    assert plan.chunks == chunks


@pytest.mark.parametrize("batch, target, why", [
    (None, batch_target(1), "symbolic"),
    (2, batch_target(2), "already within"),
    (2, {"name": "t"}, "does not limit"),
])
def test_plan_declines(batch, target, why):
    plan = plan_batch_split(spec(batch), load_target(target))
    assert isinstance(plan, Decline) and why in plan.reason


def test_lowering_declines_what_it_cannot_emit():
    no_concat = load_target(batch_target(1, ops=["Conv", "Split"]))
    assert "lacks Concat" in BatchSplit().plan(spec(2), no_concat).reason
    # an integer conv is split too (tests/lowerings/test_integer_geometry: bit-exact)
    assert BatchSplit().plan(spec(2, "QLinearConv"), load_target(batch_target(1))
                             ).tolerance == "exact"


def rewrite_and_compare(model, target, batch):
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    onnx.checker.check_model(out, full_check=True)
    assert not cr.check(out, target).remaining
    assert emitted_within(model, out, target) == []
    feeds = random_input(model, batch=batch)
    np.testing.assert_array_equal(run(out, feeds)[0], run(model, feeds)[0])
    return out, report


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
@pytest.mark.parametrize("weight_form", ["initializer", "qdq_channel"])
def test_batch_split_is_exact_and_shares_the_weight(op, weight_form):
    model = conv_model(op=op, batch=5, weight_form=weight_form)
    out, report = rewrite_and_compare(model, batch_target(2), 5)
    assert op_count(out, op) == 3 and op_count(out, "Split") == 1 and op_count(out, "Concat") == 1
    convs = [n for n in out.graph.node if n.op_type == op]
    assert len({n.input[1] for n in convs}) == 1        # one weight tensor, not three copies
    record = report.records[0]
    assert record.pass_name == "batch" and record.tolerance == "exact"
    assert record.verify["passed"] and record.verify["max_abs"] == 0.0
    assert record.params_after == record.params_before


def test_slice_where_the_target_has_no_split():
    target = batch_target(1, ops=["Conv", "Slice", "Concat", "Relu"])
    out, _ = rewrite_and_compare(conv_model(batch=3), target, 3)
    assert op_count(out, "Slice") == 3 and op_count(out, "Split") == 0


def test_batch_then_other_rules_per_chunk():
    """The chunks themselves go on to the lowerings they need (here a channel split)."""
    target = {"name": "t", "conv": {"max_batch": 1, "max_out_channels": 4}}
    out, report = rewrite_and_compare(conv_model(batch=2, cout=8), target, 2)
    assert [r.pass_name for r in report.records].count("channel_split") == 2
    assert op_count(out, "Conv") == 4


def test_symbolic_batch_is_not_reported():
    """A symbolic batch cannot be proved too big: the rule passes and nothing is rewritten."""
    model = conv_model(batch="N")
    out, report = cr.rewrite(model, batch_target(1))
    assert report.status == "ok" and not report.records


@st.composite
def batch_case(draw):
    rank = draw(st.sampled_from([1, 2, 3]))
    op = draw(st.sampled_from(["Conv", "Conv", "ConvTranspose"]))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    batch = draw(st.integers(2, 7))
    model = conv_model(op=op, cin=draw(st.integers(1, 4)), cout=draw(st.integers(1, 4)),
                       kernel=kernel, spatial=tuple(draw(st.integers(3, 6)) for _ in range(rank)),
                       batch=batch, bias=draw(st.booleans()),
                       weight_form=draw(st.sampled_from(["initializer", "qdq_tensor"])),
                       seed=draw(st.integers(0, 100)))
    ops = draw(st.sampled_from([None, ["Conv", "ConvTranspose", "Split", "Concat", "Relu",
                                       "DequantizeLinear"],
                                ["Conv", "ConvTranspose", "Slice", "Concat", "Relu",
                                 "DequantizeLinear"]]))
    target = {"name": "random", "conv": {"max_batch": draw(st.integers(1, batch - 1))},
              "max_tensor_rank": 2 + rank, **({"ops": ops} if ops else {})}
    return model, target, batch


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(batch_case())
def test_batch_split_property(case):
    model, target, batch = case
    out, report = rewrite_and_compare(model, target, batch)
    limit = target["conv"]["max_batch"]
    inferred = onnx.shape_inference.infer_shapes(out)
    shapes = {v.name: v.type.tensor_type.shape.dim for v in inferred.graph.value_info}
    convs = [n for n in out.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert all(shapes[n.input[0]][0].dim_value <= limit for n in convs)
    assert len(convs) == -(-batch // limit)


ONNX_CASES = Path(onnx.__file__).parent / "backend/test/data/pytorch-converted"


@pytest.mark.parametrize("case", ["test_Conv1d_stride", "test_Conv2d_depthwise_with_multiplier",
                                  "test_Conv2d_dilated", "test_Conv2d_groups"])
@pytest.mark.parametrize("preset", ["generic", "ethos-u55-vela3"])
def test_onnx_shipped_batch2_cases(case, preset, tmp_path):
    """The conv cases that ship inside the onnx package run batch 2: on batch-1 presets the
    command line now exits 0 and the rewritten model reproduces the shipped outputs."""
    from convrewrite.cli import main
    folder = ONNX_CASES / case
    if not folder.exists():
        pytest.skip(f"this onnx build ships no {case}")
    out = tmp_path / "out.onnx"
    assert main([str(folder / "model.onnx"), "-t", preset, "-o", str(out), "--quiet"]) == 0
    x = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0/input_0.pb")))
    want = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0/output_0.pb")))
    rewritten = onnx.load(str(out))
    assert x.shape[0] == 2 and not cr.check(rewritten, preset).remaining
    got = run(rewritten, {rewritten.graph.input[0].name: x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
