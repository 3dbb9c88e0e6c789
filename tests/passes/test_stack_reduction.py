"""effdet's BiFPN "fast attention" fusion: ``torch.stack(weighted levels, dim=-1).sum(-1)``,
exported as Unsqueeze per level -> Concat on the new axis -> ReduceSum: a 5-D stack on a rank-4
target. It becomes an Add chain of the levels (4-D throughout), checked on onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

import convrewrite as cr
from convrewrite.models.builder import GraphBuilder, T
from convrewrite.ops.reference import standard_reference
from tests.conv_cases import random_input, run
from tests.passes.test_rank_reduction import max_rank, shape_const
from tests.passes.variant_cases import ops_of


def stack_model(levels=3, reduce="ReduceSum", axis=-1, axes_as_input=True, keepdims=0):
    """``levels`` convs of one input, each times a weight, stacked on a new ``axis`` and reduced
    over it, then a conv."""
    g = GraphBuilder("stack_sum", seed=21)
    x = g.input("input", 3, (6, 6), 1)
    stacked = []
    for i in range(levels):
        y = g.conv(x, 8, 3, name=f"level{i}")
        y = g.node("Mul", [y.name, g.const(f"w{i}", np.float32(0.3 + 0.2 * i))], f"weigh{i}")
        stacked.append(g.node("Unsqueeze", [y, shape_const(g, f"u{i}/axes", [axis])],
                              f"unsqueeze{i}"))
    s = g.node("Concat", stacked, "stack", axis=axis)
    if axes_as_input:
        out = g.node(reduce, [s, shape_const(g, "r/axes", [axis])], "fuse", keepdims=keepdims)
    else:
        out = g.node(reduce, [s], "fuse", axes=[axis], keepdims=keepdims)
    g.output(g.conv(T(out, 8, (6, 6)), 4, 1, name="after"), "out")
    return g.build()


@pytest.mark.parametrize("reduce,axis,axes_as_input,levels", [
    ("ReduceSum", -1, True, 3), ("ReduceSum", 4, True, 2), ("ReduceMean", -1, False, 3),
    ("ReduceSum", 0, True, 2), ("ReduceSum", -1, True, 1)])
def test_a_stack_summed_over_its_axis_becomes_an_add_chain(reduce, axis, axes_as_input, levels):
    model = stack_model(levels, reduce, axis, axes_as_input)
    assert max_rank(model) == 5 and cr.check(model, "generic").remaining
    out, report = cr.rewrite(model, "generic")
    assert report.status == "ok", report.render()
    assert max_rank(out) <= 4 and not cr.check(out, "generic").remaining
    records = [r for r in report.records if r.pass_name == "stack_reduction"]
    assert len(records) == 1 and records[0].verify["passed"]
    assert ops_of(out).count("Add") == levels - 1 and "Concat" not in ops_of(out)
    feeds = random_input(model)
    np.testing.assert_allclose(run(out, feeds)[0], run(standard_reference(model), feeds)[0],
                               rtol=1e-5, atol=1e-5)


def test_a_stack_reduced_over_another_axis_is_left_to_the_other_passes():
    """Summing over the channel axis instead (keepdims 0) is no stack sum: not this pass's."""
    g = GraphBuilder("not_stack_sum", seed=22)
    x = g.input("input", 3, (6, 6), 1)
    ys = [g.node("Unsqueeze", [g.conv(x, 8, 3, name=f"c{i}").name,
                               shape_const(g, f"a{i}", [-1])], f"u{i}") for i in range(2)]
    s = g.node("Concat", ys, "stack", axis=-1)
    out = g.node("ReduceSum", [s, shape_const(g, "r", [1])], "sum", keepdims=0)
    g.output(T(out, 6, (6, 2)), "out")
    _, report = cr.rewrite(g.build(), "generic")
    assert not [r for r in report.records if r.pass_name == "stack_reduction"]
