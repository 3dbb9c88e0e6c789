"""View sinking (passes.view_sinking): between lowered 3-D convs on a rank-4 target no 5-D
tensor is left, through the ops a 3-D net puts there; a view it cannot move is named, not
passed over."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import onnx_graphsurgeon as gs
from onnx import helper

import convrewrite as cr
from convrewrite.models.builder import GraphBuilder
from convrewrite.passes.protocol import RewriteContext
from convrewrite.passes.view_sinking import ViewSinking
from convrewrite.target import load_target
from tests.conv_cases import random_input, run


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    interface = {t.name for t in [*model.graph.input, *model.graph.output]}
    return {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info
            if v.name not in interface}


def _residual_3d_net(tail: str = "pool", batch=1) -> onnx.ModelProto:
    g = GraphBuilder("residual3d", seed=3)
    x = g.input("clip", 4, (4, 6, 6), batch)
    a = g.relu(g.conv(x, 8, 3, name="stem"), "stem_relu")
    c = g.conv(a, 8, 3, name="body")
    scale = g.const("bn_scale", np.linspace(0.5, 1.5, 8, dtype=np.float32))
    shift = g.const("bn_shift", np.linspace(-0.2, 0.2, 8, dtype=np.float32))
    mean = g.const("bn_mean", np.linspace(-0.1, 0.1, 8, dtype=np.float32))
    var = g.const("bn_var", np.linspace(0.9, 1.1, 8, dtype=np.float32))
    bn = g.node("BatchNormalization", [c.name, scale, shift, mean, var], "bn")
    per_channel = g.const("gain", np.linspace(0.8, 1.2, 8, dtype=np.float32).reshape(8, 1, 1, 1))
    scaled = g.node("Mul", [bn, per_channel], "gain_mul")
    summed = g.node("Add", [scaled, a.name], "residual")
    out = type(a)(g.relu(type(a)(summed, 8, a.spatial), "out_relu").name, 8, a.spatial)
    if tail == "pool":
        g.output(g.linear(g.global_avg_pool(out, "pool"), 3, "head"), "logits")
    else:
        g.output(g.maxpool(out, 2, 2, 0, "pool3d"), "pooled")
    return g.build()


@pytest.mark.parametrize("target", ["generic", "ethos-u55"])
@pytest.mark.parametrize("batch", [1, "N"])
def test_a_residual_3d_block_keeps_every_inner_tensor_4d_and_matches(batch, target):
    # a symbolic batch: inference names the batch behind a -1 Reshape afresh on each branch
    model = _residual_3d_net(batch=batch)
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    assert all(rank <= 4 for rank in _ranks(out).values()), _ranks(out)
    assert any(note.startswith("view sinking:") for note in report.notes)
    feeds = random_input(model)
    np.testing.assert_allclose(run(out, feeds)[0], run(model, feeds)[0], atol=1e-5, rtol=1e-4)
    assert not cr.check(out, target).remaining
    _, again = cr.rewrite(out, target)
    assert again.status == "ok" and not again.records


def test_a_view_no_rewrite_can_move_is_named_with_the_rule_it_breaks():
    # a 3-D MaxPool reads the conv's 5-D output: the 4 -> 5-D view must stay, and is illegal
    out, report = cr.rewrite(_residual_3d_net(tail="maxpool"), "generic")
    left = [r for r in report.remaining if r.op == "Reshape"]
    assert left and report.status != "ok", report.render()
    assert all([v.rule for v in r.violations] == ["max_tensor_rank"] for r in left)
    assert any("MaxPool" in r.reasons[0] for r in left), [r.reasons for r in left]


def _view_pair_graph(middle: str, allowzero: int = 0) -> onnx.ModelProto:
    """x [1, 2, 3, 4] -> Reshape [0, 2, 3, 2, 2] -> middle -> Reshape [1, 2, 3, 4] -> y."""
    nodes = [helper.make_node("Reshape", ["x", "s5"], ["v"], name="up"),
             helper.make_node(middle, ["v"], ["m"], name="mid"),
             helper.make_node("Reshape", ["m", "s4"], ["y"], name="down", allowzero=allowzero)]
    graph = helper.make_graph(
        nodes, "pair", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 3, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 3, 4])],
        [onnx.numpy_helper.from_array(np.array([0, 2, 3, 2, 2], np.int64), "s5"),
         onnx.numpy_helper.from_array(np.array([1, 2, 3, 4], np.int64), "s4")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _sink(model, target):
    from convrewrite.gs_graph import from_graph, to_graph
    ctx = RewriteContext(graph=to_graph(model), target=load_target(target), opset=17)
    result = ViewSinking().run(ctx, model)
    return from_graph(result.graph, model), result


@pytest.mark.parametrize("allowzero", [0, 1])
def test_a_view_pair_around_an_elementwise_op_folds_away(allowzero):
    # the dynamo exporter writes allowzero=1; without a 0 in the shape it reads the same
    model = _view_pair_graph("Relu", allowzero)
    sunk, result = _sink(model, "generic")
    assert result.modified
    assert [n.op_type for n in sunk.graph.node if n.op_type != "Constant"] == ["Relu", "Reshape"]
    assert all(rank <= 4 for rank in _ranks(sunk).values())
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)}
    np.testing.assert_array_equal(run(sunk, feeds)[0], run(model, feeds)[0])


def test_views_stay_where_the_target_holds_their_rank_or_the_op_cares_about_layout():
    # no rank limit: nothing to do; Softmax (over the last axis) depends on the layout
    assert not _sink(_view_pair_graph("Relu"), {"name": "any"})[1].modified
    assert not _sink(_view_pair_graph("Softmax"), "generic")[1].modified


def test_gs_graph_untouched_without_a_rank_limit():
    graph = gs.import_onnx(_view_pair_graph("Relu"))
    ctx = RewriteContext(graph=graph, target=load_target({"name": "any"}), opset=17)
    assert ViewSinking().run(ctx, _view_pair_graph("Relu")).graph is graph


@pytest.mark.parametrize("opset,keepdims", [(17, 1), (18, 1), (18, 0)])
def test_a_reduction_over_every_axis_after_the_channels_reads_the_4d_source(opset, keepdims):
    # PyTorch's AdaptiveAvgPool3d(1) as dynamo exports it: ReduceMean over axes 2, 3, 4
    g = GraphBuilder("reduce3d", seed=4)
    x = g.input("clip", 4, (4, 6, 6), 1)
    a = g.relu(g.conv(x, 8, 3, name="c1"), "r1")
    if opset >= 18:
        axes = g.const("axes", np.array([2, 3, 4], np.int64))
        pooled = g.node("ReduceMean", [a.name, axes], "mean", keepdims=keepdims)
    else:
        pooled = g.node("ReduceMean", [a.name], "mean", axes=[2, 3, 4], keepdims=keepdims)
    g.output(type(a)(pooled, 8, (1, 1, 1)), "y")
    model = g.build(opset=opset)
    out, report = cr.rewrite(model, "generic")
    assert report.status == "ok", report.render()
    assert all(rank <= 4 for rank in _ranks(out).values()), _ranks(out)
    feeds = random_input(model)
    np.testing.assert_allclose(run(out, feeds)[0], run(model, feeds)[0], atol=1e-6, rtol=1e-5)
