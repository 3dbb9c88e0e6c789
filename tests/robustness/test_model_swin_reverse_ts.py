"""transformers' Swin through TorchScript (dynamic batch N) kept its 6-D window-reverse views on
every rank-4 preset (exit 3, "the region does not run alone on onnxruntime (Fail)") while the
dynamo export rewrites. The cause, in small (onnx.helper, no torch): the attention output x is
[N*16, 16, 16] (16 windows on the batch axis, a batch learned by ``batch_shapes`` but not by
onnx's data propagation, which stops at Div and Cast), and each view's target is computed from
the shape of the tensor before it, inside the region (``windows.view(-1, h, w,
windows.shape[-1])``). The probe ran x with 2 and 3 rows, which the 6-D view cannot take; and
with the right rows the view's own Shape made its input an output of the region, so the
rewrite wrote it twice or not at all."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from convrewrite.decline import Decline
from convrewrite.gs_graph import to_graph
from convrewrite.passes.probe import run_region
from convrewrite.passes.shuffle import find_region
from tests.conv_cases import random_input, run
from tests.passes.test_rank_reduction import max_rank

TOKENS, CHANNELS, WINDOW = 256, 16, 4           # a 16x16 map, 4x4 windows: 16 windows


def _ints(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def swin_reverse_ts(shared: bool = False) -> onnx.ModelProto:
    """inp [N, 256, 16] -> windows x [N*16, 16, 16] (the batch as Mul -> Div -> Cast from
    Shape(inp)) -> Relu (the attention) -> view [-1, 4, 4, C(x)] -> view [-1, 4, 4, 4, 4,
    C(a)] -> permute (0, 1, 3, 2, 4, 5) -> view [-1, 16, 16, C(a)] -> view [N, 256, 16] ->
    Relu; C(t) is Gather(Shape(t), -1). ``shared``: C(a) also shapes a view after the region."""
    n = helper.make_node
    consts = [_ints("i0", 0), _ints("i2", 2), _ints("i3", 3), _ints("ax0", [0]),
              _ints("tokens", TOKENS), _ints("per_window", WINDOW * WINDOW),
              _ints("c16", [16]), _ints("c4", [WINDOW]), _ints("m1", [-1]),
              _ints("c256", [TOKENS])]
    nodes = [
        n("Shape", ["inp"], ["sin"]), n("Gather", ["sin", "i0"], ["nb"], axis=0),
        n("Mul", ["nb", "tokens"], ["tok"]), n("Div", ["tok", "per_window"], ["win"]),
        n("Cast", ["win"], ["winc"], to=TensorProto.INT64),
        n("Unsqueeze", ["winc", "ax0"], ["uw"]),
        n("Concat", ["uw", "c16", "c16"], ["s0"], axis=0),
        n("Reshape", ["inp", "s0"], ["x0"]), n("Relu", ["x0"], ["x"], name="attention"),
        n("Shape", ["x"], ["sx"]), n("Gather", ["sx", "i2"], ["cx"], axis=0),
        n("Unsqueeze", ["cx", "ax0"], ["ucx"]),
        n("Concat", ["m1", "c4", "c4", "ucx"], ["s6"], axis=0),
        n("Reshape", ["x", "s6"], ["a"], name="Reshape_6"),
        n("Shape", ["a"], ["sa"]), n("Gather", ["sa", "i3"], ["ca"], axis=0),
        n("Unsqueeze", ["ca", "ax0"], ["uca"]),
        n("Concat", ["m1", "c4", "c4", "c4", "c4", "uca"], ["s7"], axis=0),
        n("Reshape", ["a", "s7"], ["b6"], name="Reshape_7"),
        n("Transpose", ["b6"], ["t6"], perm=[0, 1, 3, 2, 4, 5], name="Transpose_2"),
        n("Concat", ["m1", "c16", "c16", "uca"], ["s8"], axis=0),
        n("Reshape", ["t6", "s8"], ["r4"], name="Reshape_8"),
        n("Unsqueeze", ["nb", "ax0"], ["unb"]),
        n("Concat", ["unb", "c256", "c16"], ["s9"], axis=0),
        n("Reshape", ["r4", "s9"], ["r3"], name="Reshape_9"),
        n("Relu", ["r3"], ["post" if shared else "y"], name="post"),
    ]
    if shared:
        nodes += [n("Concat", ["unb", "m1", "uca"], ["s10"], axis=0),
                  n("Reshape", ["post", "s10"], ["y"], name="after")]
    graph = helper.make_graph(
        nodes, "swin_reverse_ts",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, ["N", TOKENS, CHANNELS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", TOKENS, CHANNELS])],
        consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _region(model: onnx.ModelProto):
    graph = to_graph(model)
    trigger = next(node for node in graph.nodes if node.name == "Reshape_7")
    return graph, find_region(trigger, graph)


def test_the_windows_batch_is_learned_as_a_multiple_of_n():
    """The premise: x's batch is N*16 (else the probe's batch would not matter)."""
    _, (x, nodes, _) = _region(swin_reverse_ts())
    assert x.name == "x" and x.shape == ["N*16", 16, 16]
    assert {n.name for n in nodes} >= {"Reshape_6", "Reshape_7", "Transpose_2", "Reshape_8"}


@pytest.mark.parametrize("shared", [False, True])
def test_shape_arithmetic_serving_the_region_is_not_an_output(shared):
    """Shape(a) only computes the region's own targets: a is no output, unless that arithmetic
    also shapes a view after the region."""
    _, (_, _, outputs) = _region(swin_reverse_ts(shared))
    assert sorted(t.name for t in outputs) == (["a", "r3"] if shared else ["r3"])


@pytest.mark.parametrize("shared", [False, True])
def test_window_reverse_with_targets_computed_inside_is_rewritten(shared):
    model = swin_reverse_ts(shared)
    assert max_rank(model) == 6
    out, report = cr.rewrite(model, "generic")
    assert report.status == "ok", report.render()
    assert max_rank(out) <= 4 and not cr.check(out, "generic").remaining
    records = [r for r in report.records if r.pass_name == "rank_reduction"]
    assert records and all(r.verify["passed"] and r.verify["bit_exact"] for r in records)
    assert [d.dim_param for d in out.graph.input[0].type.tensor_type.shape.dim[:1]] == ["N"]
    for batch in (1, 2, 3):
        feeds = random_input(model, batch=batch, seed=batch)
        assert np.array_equal(run(out, feeds)[0], run(model, feeds)[0])


def test_a_probe_the_region_cannot_take_names_the_node_and_why():
    """x probed with 2 rows (not a multiple of 16): the decline says which node failed and
    onnxruntime's words, not only that the region 'does not run alone'."""
    model = swin_reverse_ts()
    graph, (x, nodes, outputs) = _region(model)
    ramp = np.arange(2 * 16 * 16, dtype=np.int64).reshape(2, 16, 16)
    got = run_region(x, nodes, outputs, graph, model, [ramp, ramp[:1]])
    assert isinstance(got, Decline)
    text = str(got)
    assert "fails on a probe of shape [2, 16, 16]" in text, text
    assert "Reshape node 'Reshape_7'" in text and "cannot be reshaped" in text, text
