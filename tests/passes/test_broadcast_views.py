"""timm's ResNeSt split attention multiplies a 5-D radix view by a 5-D attention view and sums
over the radix: on a rank-4 target every tensor of it runs in merged 4-D views, bit-equal on
onnxruntime, and the checker then finds nothing."""

from __future__ import annotations

import numpy as np
import pytest

import convrewrite as cr
from convrewrite.models.builder import GraphBuilder, T
from convrewrite.ops.reference import standard_reference
from tests.conv_cases import random_input, run
from tests.passes.test_rank_reduction import max_rank, shape_const
from tests.passes.variant_cases import ops_of


def split_attention_model(radix=2, channels=4, size=5, gap="sum"):
    """conv -> [N, r*C, H, W] viewed [N, r, C, H, W]; its sum over r pooled, a 1x1 conv and
    timm's rSoftMax give the attention [N, r*C], viewed [N, r, C, 1, 1]; the product summed
    over r. ``gap`` "mean": the pooled branch reads the view through a ReduceMean too."""
    g = GraphBuilder("split_attention", seed=11)
    x = g.conv(g.input("input", 3, (size, size), 1), radix * channels, 3, name="splat")
    x5 = g.node("Reshape", [x.name, shape_const(g, "radix/v", [1, radix, channels, size, size])],
                "radix/view")
    axes = shape_const(g, "radix/axes", [1])
    pooled = g.node("ReduceSum", [x5, axes], "radix/gap", keepdims=0)
    if gap == "mean":
        pooled = g.node("ReduceMean", [x5], "radix/mean", axes=[1], keepdims=0)
    pooled = g.global_avg_pool(T(pooled, channels, (size, size)), "gap")
    attn = g.conv(g.relu(g.conv(pooled, 8, 1, name="fc1"), "fc1/relu"), radix * channels, 1,
                  name="fc2")
    a = g.node("Reshape", [attn.name, shape_const(g, "rsm/v", [1, 1, radix, channels])],
               "rsm/view")
    a = g.node("Transpose", [a], "rsm/transpose", perm=[0, 2, 1, 3])
    a = g.node("Softmax", [a], "rsm/softmax", axis=1)
    a = g.node("Reshape", [a, shape_const(g, "rsm/flat", [1, -1])], "rsm/flat")
    a5 = g.node("Reshape", [a, shape_const(g, "attn/v", [1, radix, channels, 1, 1])], "attn/view")
    out = g.node("ReduceSum", [g.node("Mul", [x5, a5], "attn/mul"), axes], "attn/sum",
                 keepdims=0)
    g.output(g.conv(T(out, channels, (size, size)), 4, 1, name="after"), "out")
    return g.build()


@pytest.mark.parametrize("gap", ["sum", "mean"])
def test_split_attention_runs_in_4d_views(gap):
    model = split_attention_model(gap=gap)
    assert max_rank(model) == 5
    out, report = cr.rewrite(model, "generic")
    assert report.status == "ok", report.render()
    feeds = random_input(model)
    assert np.array_equal(run(out, feeds)[0], run(standard_reference(model), feeds)[0])
    assert max_rank(out) <= 4 and not cr.check(out, "generic").remaining
    records = [r for r in report.records if r.pass_name == "broadcast_views"]
    assert len(records) == 1 and records[0].verify["passed"]
    assert ops_of(out).count("Mul") == 1


def test_an_island_read_by_something_else_declines_saying_why():
    g = GraphBuilder("not_reduced", seed=12)
    x = g.conv(g.input("input", 3, (5, 5), 1), 8, 3, name="c")
    x5 = g.node("Reshape", [x.name, shape_const(g, "v", [1, 2, 4, 5, 5])], "view")
    y = g.node("Softmax", [g.node("Mul", [x5, x5], "sq")], "softmax", axis=1)
    y = g.node("Reshape", [y, shape_const(g, "back", [1, 8, 5, 5])], "back")
    g.output(T(y, 8, (5, 5)), "out")
    _, report = cr.rewrite(g.build(), "generic")
    assert report.status != "ok"
    assert "broadcast_views: sq.out is read by Softmax, not a reduction" in report.render()


def test_weighted_sum_with_constants_and_a_unary_op():
    """BiFPN-style fusion weights over a stacked view: [N, k, C, H, W] times a constant
    [k, 1, 1, 1], plus a scalar, through a Relu, then a ReduceMax over k (exact)."""
    g = GraphBuilder("weighted", seed=13)
    x = g.conv(g.input("input", 3, (5, 5), 1), 8, 3, name="c")
    x5 = g.node("Reshape", [x.name, shape_const(g, "v", [1, 2, 4, 5, 5])], "view")
    w = g.const("w", np.array([0.25, 0.75], np.float32).reshape(2, 1, 1, 1))
    y = g.node("Add", [g.node("Mul", [x5, w], "weigh"), g.const("b", np.float32(0.1))], "shift")
    y = g.node("ReduceMax", [g.node("Relu", [y], "relu")], "fuse", axes=[1], keepdims=0)
    g.output(g.conv(T(y, 4, (5, 5)), 2, 1, name="after"), "out")
    model = g.build()
    out, report = cr.rewrite(model, "generic")
    assert report.status == "ok", report.render()
    feeds = random_input(model)
    assert np.array_equal(run(out, feeds)[0], run(standard_reference(model), feeds)[0])
    assert max_rank(out) <= 4
    record, = [r for r in report.records if r.pass_name == "broadcast_views"]
    assert record.tolerance == "exact" and record.verify["bit_exact"]


def test_bifpn_stack_and_weighted_sum():
    """efficientdet-pytorch's fast fusion: torch.stack(nodes, -1) (Unsqueeze each to 5-D, a
    Concat) times the normalised weights [k], summed over the last axis."""
    g = GraphBuilder("bifpn", seed=14)
    inp = g.input("input", 3, (5, 5), 1)
    parts = []
    for k in range(3):
        c = g.conv(inp, 4, 3, name=f"level{k}")
        parts.append(g.node("Unsqueeze", [c.name, shape_const(g, f"u{k}", [-1])], f"stack{k}"))
    stacked = g.node("Concat", parts, "stack", axis=-1)
    weights = g.const("fusion_w", np.array([0.2, 0.5, 0.3], np.float32))
    fused = g.node("ReduceSum", [g.node("Mul", [stacked, weights], "weigh"),
                                 shape_const(g, "last", [-1])], "fuse", keepdims=0)
    g.output(g.conv(T(fused, 4, (5, 5)), 2, 1, name="after"), "out")
    model = g.build()
    assert max_rank(model) == 5
    out, report = cr.rewrite(model, "generic")
    assert report.status == "ok", report.render()
    feeds = random_input(model)
    assert np.array_equal(run(out, feeds)[0], run(standard_reference(model), feeds)[0])
    assert max_rank(out) <= 4 and not cr.check(out, "generic").remaining
    record, = [r for r in report.records if r.pass_name == "broadcast_views"]
    assert record.verify["passed"] and ops_of(out).count("Concat") == 1
