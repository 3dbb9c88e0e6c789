"""1-D and 3-D convs on engines that run only 2-D convs."""

from __future__ import annotations

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convrewrite as cr
from convrewrite.decline import Decline
from convrewrite.conv import ConvSpec
from convrewrite.plan.rank import plan_rank_lowering
from convrewrite.target import load_target
from tests.conv_cases import WEIGHT_FORMS, conv_model
from tests.passes.variant_cases import ops_of, rewrite_and_compare

ONLY_2D = {"name": "2d", "conv": {"spatial_ranks": [2]}}
ONLY_2D_BATCH_1 = {"name": "2d-b1", "conv": {"spatial_ranks": [2], "max_batch": 1}}
ONLY_2D_NO_SLICE = {"name": "2d-split", "conv": {"spatial_ranks": [2]},
                    "ops": ["Conv", "Relu", "Split", "Reshape", "Add", "Concat", "Pad"]}


def spec3d(depth=6, batch=1, kernel=(3, 3, 3), stride=(1, 1, 1)):
    return ConvSpec("c", "Conv", 4, 4, 1, kernel, stride, (1, 1, 1), (1,) * 6,
                    input_shape=(batch, 4, depth, 8, 8))


ONLY_2D_BATCH_1_RANK_4 = {"name": "2d-b1-r4", "max_tensor_rank": 4, "max_tensor_batch": 1,
                          "conv": {"spatial_ranks": [2], "max_batch": 1}}


def test_plans():
    assert plan_rank_lowering(spec3d(), load_target(ONLY_2D), (1,) * 6).form == "depth_batch"
    per_frame = plan_rank_lowering(spec3d(), load_target(ONLY_2D_BATCH_1), (1,) * 6)
    assert per_frame.form == "per_frame" and per_frame.out_depth == 6
    assert "batch limit" in per_frame.strategy
    assert isinstance(plan_rank_lowering(spec3d(), load_target(
        {"name": "3d", "conv": {"spatial_ranks": [3]}}), (1,) * 6), Decline)
    chunked = plan_rank_lowering(spec3d(batch=5), load_target(
        {"name": "b2", "conv": {"spatial_ranks": [2], "max_batch": 2}}), (1,) * 6)
    assert chunked.form == "per_frame" and chunked.batch_chunks == ((0, 2), (2, 4), (4, 5))
    assert "3 chunks" in chunked.strategy


@pytest.mark.parametrize("batch", [2, 3])
def test_a_batched_3d_net_on_a_batch_1_rank_4_engine_leaves_nothing_illegal(batch):
    """Vela 3's case: every op batch 1, no tensor over 4-D. The 3-D convs run per frame and per
    batch item (nothing inside reads a batch over 1); the model's own pointwise ops on the 5-D
    maps run on rank-1 views of them (pieces would be 5-D), and the views around them fold into
    the next conv's 5 -> 4-D view."""
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32),
                                       name)

    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["a"], name="c1", pads=[1] * 6),
             helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Conv", ["b", "W2"], ["c"], name="c2", pads=[1] * 6,
                              strides=[2, 1, 1]),
             helper.make_node("Conv", ["x", "W3"], ["s"], name="c3", strides=[2, 1, 1]),
             helper.make_node("Add", ["c", "s"], ["d"], name="add"),
             helper.make_node("Sigmoid", ["d"], ["z"], name="sig")]
    graph = helper.make_graph(
        nodes, "net3d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 6, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [w("W1", 8, 4, 3, 3, 3), w("B1", 8), w("W2", 8, 8, 3, 3, 3), w("W3", 8, 4, 1, 1, 1)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for target in (ONLY_2D_BATCH_1_RANK_4, "ethos-u55-vela3"):
        out, report = rewrite_and_compare(model, target)
        assert report.status == "ok", report.render()
        assert not cr.check(out, target).remaining
        assert "per batch chunk" in next(r.rewrite for r in report.records if r.node == "c1")


@pytest.mark.parametrize("weight_form", WEIGHT_FORMS)
def test_1d_conv_as_2d(weight_form):
    model = conv_model(cin=6, cout=10, kernel=(5,), strides=(2,), pads=(2, 1),
                       weight_form=weight_form, spatial=(17,))
    out, report = rewrite_and_compare(model, ONLY_2D, atol=1e-6)
    assert report.records[0].pass_name == "rank"
    assert not cr.check(out, ONLY_2D).remaining


def test_1d_conv_transpose_as_2d():
    model = conv_model(op="ConvTranspose", cin=6, cout=4, kernel=(4,), strides=(2,),
                       pads=(1, 1), spatial=(9,))
    out, _ = rewrite_and_compare(model, {"name": "2d", "conv": {"spatial_ranks": [2]}}, atol=1e-6)
    assert "ConvTranspose" in ops_of(out)


@pytest.mark.parametrize("target", [ONLY_2D, ONLY_2D_BATCH_1, ONLY_2D_NO_SLICE])
def test_3d_conv_as_2d(target):
    model = conv_model(cin=4, cout=6, kernel=(3, 3, 3), strides=(2, 1, 1), pads=(1, 1, 0) * 2,
                       spatial=(7, 6, 5))
    out, report = rewrite_and_compare(model, target)
    assert not cr.check(out, target).remaining
    assert report.records[0].pass_name == "rank"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kd=st.integers(1, 3), sd=st.integers(1, 2), dd=st.integers(1, 2), pd=st.integers(0, 2),
       depth=st.integers(3, 7), groups=st.sampled_from([1, 2]), batch=st.integers(1, 2),
       target=st.sampled_from([ONLY_2D, ONLY_2D_BATCH_1, ONLY_2D_NO_SLICE]))
def test_property_3d(kd, sd, dd, pd, depth, groups, batch, target):
    if depth + 2 * pd < (kd - 1) * dd + 1:
        return
    model = conv_model(cin=4, cout=4, groups=groups, kernel=(kd, 3, 3), strides=(sd, 1, 2),
                       dilations=(dd, 1, 1), pads=(pd, 1, 1) * 2, spatial=(depth, 5, 6),
                       batch=batch)
    rewrite_and_compare(model, target)


def test_a_3d_conv_on_a_rank_4_target_leaves_no_5d_tensor_inside_and_is_idempotent():
    # of the tensors the rewrite made only the view writing the model's 5-D output is 5-D (the
    # model's own Relu on its 5-D input stays as it was)
    import convrewrite as cr
    from tests.conv_cases import conv_model
    model = conv_model(cin=8, cout=8, kernel=(3, 3, 3), spatial=(4, 6, 6), pads=(1,) * 6)
    once, report = cr.rewrite(model, "generic")
    assert report.status == "ok", report.render()
    inferred = onnx.shape_inference.infer_shapes(once)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info}
    kept = {o.name for o in once.graph.output} | {t for n in model.graph.node for t in n.output}
    assert all(rank <= 4 for name, rank in ranks.items() if name not in kept), ranks
    again, second = cr.rewrite(once, "generic")
    assert second.status == "ok" and not second.records, second.render()
