"""passes.inline_functions: which model-local functions are inlined (only those holding a conv the
target rejects at a call site, and the functions on the way to them), what the note says, and
that inlining alone counts as a change the pipeline verifies end to end."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from convrewrite.pipeline import PIPELINE, RewriteResult, run_pipeline
from convrewrite.passes.inline_functions import inline_rejected_functions
from convrewrite.target import load_target

K210 = load_target("k210")
OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("my.fn", 1)]


def _conv_fn(name: str, conv: str = "fconv") -> onnx.FunctionProto:
    """A function ``(a, w) -> b`` holding one conv whose weight is the input ``w``."""
    return helper.make_function("my.fn", name, ["a", "w"], ["b"], [
        helper.make_node("Conv", ["a", "w"], ["b"], name=conv, auto_pad="SAME_UPPER")], OPSETS)


def _model(calls: list[tuple[str, str]], functions: list[onnx.FunctionProto],
           kernels: dict[str, int]) -> onnx.ModelProto:
    """A chain ``x -> call... -> y``; each call ``(function, weight)`` reads weight ``W_k``."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (fn, weight) in enumerate(calls):
        out = "y" if i == len(calls) - 1 else f"t{i}"
        nodes.append(helper.make_node(fn, [prev, weight], [out], name=f"call{i}",
                                      domain="my.fn"))
        prev = out
    for weight, k in kernels.items():
        inits.append(numpy_helper.from_array(
            rng.standard_normal((4, 4, k, k)).astype(np.float32), weight))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, functions=functions, opset_imports=OPSETS)
    onnx.checker.check_model(model)
    return model


def test_only_the_function_with_a_rejected_conv_is_inlined():
    """k210 takes 3x3, not 7x7: ``Big`` is inlined (renamed conv named), ``Small`` stays."""
    model = _model([("Small", "W3"), ("Big", "W7")], [_conv_fn("Small", "sconv"),
                                                      _conv_fn("Big")], {"W3": 3, "W7": 7})
    inlined, what = inline_rejected_functions(model, K210)
    assert what.functions == ("my.fn::Big",)
    assert [f.name for f in inlined.functions] == ["Small"]
    assert [n.op_type for n in inlined.graph.node] == ["Small", "Conv"]
    (note,) = what.notes
    assert "my.fn::Big" in note and "fconv" in note and "7x7" in note
    assert f"fconv -> {inlined.graph.node[1].name}" in note


def test_the_call_site_decides():
    """One function, legal with a 3x3 weight, rejected with a 7x7 one: decided per model."""
    fn = _conv_fn("Block")
    legal = _model([("Block", "W3")], [fn], {"W3": 3})
    same, what = inline_rejected_functions(legal, K210)
    assert same is legal and what.functions == () and what.notes == ()
    mixed = _model([("Block", "W3"), ("Block", "W7")], [fn], {"W3": 3, "W7": 7})
    inlined, what = inline_rejected_functions(mixed, K210)
    assert what.functions == ("my.fn::Block",) and not inlined.functions
    assert [n.op_type for n in inlined.graph.node] == ["Conv", "Conv"]


def test_a_function_calling_a_rejected_one_is_inlined_too():
    """``Outer`` has no conv of its own but calls ``Inner``: both go, or the conv would stay in
    ``Outer``'s body, out of the lowerings' reach."""
    outer = helper.make_function("my.fn", "Outer", ["a", "w"], ["b"], [
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Inner", ["r", "w"], ["b"], name="inner", domain="my.fn")], OPSETS)
    model = _model([("Outer", "W7")], [_conv_fn("Inner"), outer], {"W7": 7})
    inlined, what = inline_rejected_functions(model, K210)
    assert set(what.functions) == {"my.fn::Inner", "my.fn::Outer"}
    assert not inlined.functions
    assert [n.op_type for n in inlined.graph.node] == ["Relu", "Conv"]
    assert any("my.fn::Outer" in n and "calls my.fn::Inner" in n for n in what.notes)


def test_inlining_alone_is_verified_end_to_end():
    """With no rewrite step at all, the inlined model still differs from the original: it is
    returned and verified against it (RewriteResult.changed), though no conv record results."""
    model = _model([("Block", "W7")], [_conv_fn("Block")], {"W7": 7})
    steps = tuple(s for s in PIPELINE if s.kind in ("inline", "verify"))
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    rewritten, result = run_pipeline(model, K210, steps=steps, feeds=lambda: feeds)
    assert result.records == [] and result.inlined == ("my.fn::Block",) and result.changed
    assert not rewritten.functions
    assert result.end_to_end is not None and result.end_to_end["passed"]
    assert [r.node for r in result.remaining] == [rewritten.graph.node[0].name]
    assert not RewriteResult().changed


def test_a_function_conv_legal_at_every_call_site_is_legal_and_the_model_is_kept():
    """Its weight is a function input (no shape inside the function): judged where it lands,
    a conv that fits at both call sites is neither inlined nor reported, in both modes."""
    import convrewrite as cr
    model = _model([("Small", "W3"), ("Small", "W3")], [_conv_fn("Small", "sconv")], {"W3": 3})
    out, report = cr.rewrite(model, "k210")
    assert report.status == "ok" and not report.remaining, report.render()
    assert out is model
    assert not cr.check(model, "k210").remaining
    big = _model([("Small", "W3"), ("Small", "W7")], [_conv_fn("Small", "sconv")],
                 {"W3": 3, "W7": 7})
    assert cr.check(big, "k210").remaining       # one call site breaks a rule: reported
