"""Integer split: tiny hand-built QLinearConv and ConvInteger models (uint8 and int8, per-tensor
and per-channel weight scales, with and without bias) on targets that limit input or output
channels, each rewrite run on onnxruntime here next to the original and required to be bit-exact
(independently of convrewrite's verifier), plus what the lowering declines and why."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from convrewrite.gs_graph import to_graph
from convrewrite.build.onnx_read import spec_of
from convrewrite.build.relax import RelaxBuilder
from convrewrite.decline import Declined
from convrewrite.lowerings.integer_split import IntegerSplit
from convrewrite.target import load_target
from convrewrite.verify import session
from tests.lowerings.integer_models import exact_integer_conv, integer_conv, random_input


def integer_model(op, x_dtype=np.uint8, w_dtype=np.int8, per_channel=False, bias=False,
                  varying_zero_points=False, cin=12, cout=10, group=1, seed=0):
    """One QLinearConv or ConvInteger (3x3, pads 1) on a [1, cin, 6, 6] input, random params."""
    return integer_conv(op, pads=(1, 1, 1, 1), cin=cin, cout=cout, size=(6, 6), x_dtype=x_dtype,
                        w_dtype=w_dtype, per_channel=per_channel,
                        varying_zero_points=varying_zero_points, bias=bias, group=group,
                        seed=seed)


exact_qlinear = exact_integer_conv      # the model's QLinearConv in int64, as ONNX says


def limits(**conv):
    return {"name": "t", "conv": conv}


def run_both(original: onnx.ModelProto, rewritten: onnx.ModelProto, seed=1):
    """Both models on onnxruntime (at the level verify uses) on the same random input."""
    feeds = {"x": random_input(original, seed)}
    return [session(m).run(None, feeds)[0] for m in (original, rewritten)]


def ops(model):
    return sorted(n.op_type for n in model.graph.node)


QLINEAR_CASES = [
    dict(x_dtype=np.uint8, w_dtype=np.int8),
    dict(x_dtype=np.uint8, w_dtype=np.int8, bias=True),
    dict(x_dtype=np.uint8, w_dtype=np.uint8, per_channel=True),
    dict(x_dtype=np.uint8, w_dtype=np.int8, per_channel=True, bias=True),
    dict(x_dtype=np.int8, w_dtype=np.int8, per_channel=True, bias=True),
    dict(x_dtype=np.int8, w_dtype=np.int8, bias=True),
]
CASE_IDS = ["u8s8", "u8s8-bias", "u8u8-perch", "u8s8-perch-bias", "s8s8-perch-bias", "s8s8-bias"]


@pytest.mark.parametrize("case", QLINEAR_CASES, ids=CASE_IDS)
def test_qlinear_output_split_is_bit_exact(case):
    model = integer_model("QLinearConv", **case, varying_zero_points=case.get("per_channel"))
    out, report = cr.rewrite(model, limits(max_out_channels=4))
    assert report.status == "ok", report.to_dict() if hasattr(report, "to_dict") else report
    assert ops(out) == ["Concat", "QLinearConv", "QLinearConv", "QLinearConv"]
    record = report.records[0]
    assert record.pass_name == "integer_split" and record.tolerance == "exact"
    assert record.verify["bit_exact"]
    ref, got = run_both(model, out)
    assert ref.dtype == got.dtype == case["x_dtype"] and np.array_equal(ref, got)
    # each chunk carries its own rows of the per-channel parameters
    if case.get("per_channel"):
        chunks = [n for n in out.graph.node if n.op_type == "QLinearConv"]
        inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
        assert [inits[n.input[4]].shape for n in chunks] == [(4,), (3,), (3,)]


@pytest.mark.parametrize("case", QLINEAR_CASES, ids=CASE_IDS)
def test_qlinear_input_split_is_requantized_bit_exact(case):
    model = integer_model("QLinearConv", **case)
    out, report = cr.rewrite(model, limits(max_in_channels=5))
    assert report.status == "ok"
    assert ops(out).count("ConvInteger") == 3 and "QLinearConv" not in ops(out)
    assert ops(out).count("QuantizeLinear") == 1
    assert "requantized once" in report.records[0].rewrite
    assert report.records[0].tolerance == "exact" and report.records[0].verify["bit_exact"]
    ref, got = run_both(model, out)
    assert np.array_equal(ref, got), f"max {np.abs(ref.astype(int) - got.astype(int)).max()} LSB"
    # and both are the conv's ONNX semantics, computed here in int64 (onnxruntime's own u8s8
    # kernel saturates on CPUs without VNNI: verify runs it as u8u8, see exact_kernels)
    assert np.abs(got.astype(int) - exact_qlinear(model, random_input(model)).astype(int)).max() <= 1


def test_qlinear_both_limits_grid():
    model = integer_model("QLinearConv", per_channel=True, bias=True)
    out, report = cr.rewrite(model, limits(max_in_channels=6, max_out_channels=5))
    assert report.status == "ok"
    assert ops(out).count("ConvInteger") == 4 and ops(out).count("QuantizeLinear") == 2
    ref, got = run_both(model, out)
    assert np.array_equal(ref, got)


@pytest.mark.parametrize("limit", [dict(max_in_channels=5), dict(max_out_channels=4),
                                   dict(max_in_channels=6, max_out_channels=5)])
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_conv_integer_split_is_exact(limit, x_dtype):
    model = integer_model("ConvInteger", x_dtype=x_dtype)
    out, report = cr.rewrite(model, limits(**limit))
    assert report.status == "ok"
    assert {"ConvInteger"} <= set(ops(out)) and ops(out).count("ConvInteger") > 1
    assert report.records[0].tolerance == "exact"
    ref, got = run_both(model, out)
    assert ref.dtype == got.dtype == np.int32 and np.array_equal(ref, got)


def test_grouped_qlinear_splits_on_group_boundaries():
    model = integer_model("QLinearConv", per_channel=True, bias=True, cin=12, cout=12, group=3)
    out, report = cr.rewrite(model, limits(max_in_channels=8, max_out_channels=8))
    assert report.status == "ok" and ops(out).count("QLinearConv") == 2    # 2 + 1 groups
    ref, got = run_both(model, out)
    assert np.array_equal(ref, got)


@pytest.mark.parametrize("case", [c for c in QLINEAR_CASES if c.get("per_channel")],
                         ids=[i for i, c in zip(CASE_IDS, QLINEAR_CASES) if c.get("per_channel")])
@pytest.mark.parametrize("limit", [dict(max_in_channels=5),
                                   dict(max_in_channels=6, max_out_channels=5)])
def test_input_split_centres_per_channel_zero_points(case, limit):
    """ConvInteger takes one weight zero point: a QLinearConv whose channels have their own is
    summed from zero-point-0 chunks less w_zp[c] times each window's input sum; bit-exact."""
    model = integer_model("QLinearConv", **case, varying_zero_points=True)
    assert len(spec_of(next(iter(to_graph(model).nodes))).weight_zero_points) > 1
    out, report = cr.rewrite(model, limits(**limit))
    assert report.status == "ok" and "per-channel weight zero points" in report.records[0].rewrite
    assert ops(out).count("Sub") == ops(out).count("ConvInteger") // 2
    assert report.records[0].tolerance == "exact" and report.records[0].verify["bit_exact"]
    ref, got = run_both(model, out)
    assert np.array_equal(ref, got), f"max {np.abs(ref.astype(int) - got.astype(int)).max()} LSB"
    # and both are the conv's ONNX semantics, computed here in int64 (onnxruntime's own u8s8
    # kernel saturates on CPUs without VNNI: verify runs it as u8u8, see exact_kernels)
    assert np.abs(got.astype(int) - exact_qlinear(model, random_input(model)).astype(int)).max() <= 1


def test_plan_declines_float_convs_missing_ops_and_relax():
    node = next(n for n in to_graph(integer_model("QLinearConv")).nodes)
    spec = spec_of(node)
    assert spec.weight_zero_points == (0,) and spec.constant_scales
    relax = RelaxBuilder(None, None)
    for call in (lambda: relax.requantize(None, None, 0, 1, "s"),
                 lambda: relax.channel_param(None, 0, 1, "s"),
                 lambda: relax.conv_integer_centred(None, None, None, 0, 1, "s", {})):
        with pytest.raises(Declined, match="ONNX only"):
            call()
    no_quantize = load_target({"name": "t", "conv": {"max_in_channels": 5},
                               "ops": ["QLinearConv", "ConvInteger", "Split", "Add", "Cast",
                                       "Mul"]})
    assert "QuantizeLinear" in IntegerSplit().plan(spec, no_quantize).reason
    fits_out = load_target({"name": "t", "conv": {"max_out_channels": 4},
                            "ops": ["QLinearConv", "Concat"]})
    assert IntegerSplit().plan(spec, fits_out).tolerance == "exact"
    from dataclasses import replace
    assert "not an integer conv" in IntegerSplit().plan(replace(spec, op_type="Conv"),
                                                        fits_out).reason


@pytest.mark.parametrize("op, target, code, needle", [
    ("QLinearConv", "max_out_channels: 4", 0, "integer_split"),
    ("QLinearConv", "max_in_channels: 5", 0, "requantized once"),
    ("ConvInteger", "max_in_channels: 5", 0, "int32 sums"),
    # K210-like ops list without the requantizing ops: exit 3, the reason named
    ("QLinearConv", "max_in_channels: 5\nops: [QLinearConv, Split, Add]", 3, "lacks Cast"),
])
def test_cli(tmp_path, op, target, code, needle):
    import json

    from tests.robustness.harness import run_cli, write_model
    write_model(tmp_path, "in.onnx", integer_model(op, per_channel=op == "QLinearConv",
                                                   bias=op == "QLinearConv"))
    conv, _, ops_line = target.partition("\n")
    (tmp_path / "chip.yaml").write_text(f"name: chip\nconv:\n  {conv}\n{ops_line}\n")
    r = run_cli(["in.onnx", "--target", "chip.yaml", "-o", "out.onnx", "--report", "r.json"],
                tmp_path)
    assert r.code == code, r.stderr
    report = (tmp_path / "r.json").read_text()
    assert needle in report
    if code == 0:
        data = json.loads(report)
        assert data["rewrites"] and all(rec["verify"]["bit_exact"] and rec["tolerance"] == "exact"
                                        for rec in data["rewrites"])
        assert data["end_to_end"]["bit_exact"]
        assert data["end_to_end"]["onnxruntime_optimization"] == "basic"
        ref, got = run_both(onnx.load(tmp_path / "in.onnx"), onnx.load(tmp_path / "out.onnx"))
        assert np.array_equal(ref, got)


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_onnxruntime_quantized_net_splits_bit_exact(tmp_path, weight_type, per_channel):
    """A float two-conv net quantized by onnxruntime's own quantizer (QOperator format: the
    Relu fused into QLinearConv, per-channel weights symmetric) splits on both limits, and the
    whole model's float output is bit-exact."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    for i, (x, y, cin, cout) in enumerate([("x", "c1", 16, 48), ("r1", "c2", 48, 20)]):
        inits += [numpy_helper.from_array(rng.normal(0, 0.1, (cout, cin, 3, 3)).astype(np.float32),
                                          f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [y], name=f"conv{i}",
                                      pads=[1, 1, 1, 1]))
    nodes.insert(1, helper.make_node("Relu", ["c1"], ["r1"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("c2", TensorProto.FLOAT, [1, 20, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "f.onnx")

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = [{"x": rng.uniform(-1, 1, (1, 16, 8, 8)).astype(np.float32)}
                            for _ in range(3)]

        def get_next(self):
            return self.batches.pop() if self.batches else None

    quantize_static(tmp_path / "f.onnx", tmp_path / "q.onnx", Calibration(),
                    quant_format=QuantFormat.QOperator, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=getattr(QuantType, weight_type))
    quantized = onnx.load(tmp_path / "q.onnx")
    assert ops(quantized).count("QLinearConv") == 2
    out, report = cr.rewrite(quantized, limits(max_in_channels=16, max_out_channels=16))
    assert report.status == "ok" and len(report.records) == 2
    assert "requantized once" in report.records[1].rewrite          # 48 inputs: 3 chunks
    assert all(r.verify["bit_exact"] for r in report.records)
    assert report.end_to_end["bit_exact"]
