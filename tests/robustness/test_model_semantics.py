"""Wrong answers that look right (issue 12, class 3): convs inside model-local functions and the
main graph's If/Loop bodies are rewritten (issue 14 item 6), deeper ones checked against the
target (exit 3, named with their path; never "ok"), and --check-only names them where they are; NaN
tolerances are rejected everywhere; Inf compares equal to Inf; models with Inf weights verify."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from convrewrite import cli
from convrewrite.errors import BadInputError, ConvRewriteError
from convrewrite.verify import Tolerance, compare

from .model_cases import conv_model, run_cli

RNG = np.random.default_rng(0)


def _weight(name="W", k=7):
    return numpy_helper.from_array(RNG.standard_normal((4, 4, k, k)).astype(np.float32), name)


def _vi(name, rank, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, [f"{name}_{i}" for i in range(rank)])


def if_model(k: int = 7) -> onnx.ModelProto:
    """A k x k conv (7x7: illegal on k210) in the then-branch of an If."""
    then_g = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["t"], name="inner",
                                                 pads=[k // 2] * 4)], "then", [], [_vi("t", 4)])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"], name="pass")],
                               "else", [], [_vi("e", 4)])
    node = helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g,
                            else_branch=else_g)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 8, 8])], [_vi("y", 4)],
        [_weight(k=k), numpy_helper.from_array(np.array(True), "cond")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def function_model() -> onnx.ModelProto:
    """A model-local function holding a 7x7 conv whose weight is a function input."""
    fn = helper.make_function("my.fn", "Block", ["a", "w"], ["b"],
                              [helper.make_node("Conv", ["a", "w"], ["b"], name="fconv",
                                                pads=[3] * 4)],
                              [helper.make_opsetid("", 17)])
    call = helper.make_node("Block", ["x", "W"], ["y"], name="call", domain="my.fn")
    graph = helper.make_graph([call], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 8, 8])], [_vi("y", 4)], [_weight()])
    return helper.make_model(graph, functions=[fn], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("my.fn", 1)])


def nested_if_model() -> onnx.ModelProto:
    """``if_model``'s If inside the then-branch of another: a body two levels down."""
    inner = if_model().graph.node[0]
    outer_then = helper.make_graph([inner], "outer_then", [], [_vi("y", 4)])
    outer_else = helper.make_graph([helper.make_node("Identity", ["x"], ["z"], name="skip")],
                                   "outer_else", [], [_vi("z", 4)])
    node = helper.make_node("If", ["cond"], ["out"], name="outer", then_branch=outer_then,
                            else_branch=outer_else)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 8, 8])], [_vi("out", 4)],
        [_weight(), numpy_helper.from_array(np.array(True), "cond")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_conv_in_nested_subgraph_is_not_legal(tmp_path):
    """A body inside a body is not rewritten: named with its path, exit 3."""
    where = "outer/then_branch/branch/then_branch/inner"
    got = run_cli(tmp_path, nested_if_model(), "k210", "--report", str(tmp_path / "r.json"))
    assert got.code == 3, (got.stdout, got.stderr)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "illegal"
    assert where in [r["node"] for r in report["remaining"]]
    assert f"NOT LEGAL {where}" in got.stdout
    assert cr.check(nested_if_model(), "k210").status == "illegal"


def _same_outputs(model: onnx.ModelProto, out: onnx.ModelProto) -> None:
    x = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    have = ort.InferenceSession(out.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("build, note", [
    (function_model, "inlined model-local function my.fn::Block"),
    (if_model, None)])
def test_conv_in_function_or_body_is_rewritten(tmp_path, build, note):
    """A function's illegal conv is inlined and lowered, an If body's lowered in place (issue 14
    item 6): exit 0, the output fits the target and computes what the original does."""
    model = build()                 # seeded from the module's RNG: one draw for both runs
    got = run_cli(tmp_path, model, "k210", "--report", str(tmp_path / "r.json"))
    assert got.code == 0, (got.stdout, got.stderr)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "ok" and report["end_to_end"]["passed"]
    assert all(r["verify"]["passed"] for r in report["rewrites"]) and report["rewrites"]
    if note:
        assert any(note in n and "fconv -> fconv__1" in n for n in report["notes"])
    else:
        assert report["rewrites"][0]["node"] == "branch/then_branch/inner"
    out = onnx.load(str(got.output))
    onnx.checker.check_model(out, full_check=True)
    assert not out.functions and cr.check(out, "k210").status == "ok"
    _same_outputs(model, out)


@pytest.mark.parametrize("build, where", [(function_model, "function my.fn::Block/fconv"),
                                          (if_model, "branch/then_branch/inner")])
def test_check_only_reports_conv_in_function_or_body(tmp_path, build, where):
    """--check-only rewrites (and inlines) nothing: the conv is named where it is."""
    got = run_cli(tmp_path, build(), "k210", "--check-only")
    assert got.code == 3, (got.stdout, got.stderr)
    assert f"NOT LEGAL {where}" in got.stdout
    report = cr.check(build(), "k210")
    assert report.status == "illegal" and where in [r.node for r in report.remaining]


def test_legal_conv_in_subgraph_passes(tmp_path):
    """A 3x3 conv in the branch fits k210: checked, counted, and fine."""
    model = if_model(k=3)
    report = cr.check(model, "k210")
    assert report.status == "ok" and report.convs_checked == 1


@pytest.mark.parametrize("flag", ["--atol", "--rtol"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_cli_rejects_non_finite_tolerance(tmp_path, capsys, flag, value):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(k=7), str(model))
    with pytest.raises(SystemExit) as exc:
        cli.main([str(model), "-t", "k210", flag, value, "-o", str(tmp_path / "o.onnx")])
    assert exc.value.code == 2
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("value", [".nan", ".inf", "-1.0"])
def test_yaml_rejects_non_finite_tolerance(tmp_path, value):
    number = {".nan": float("nan"), ".inf": float("inf")}.get(value) or float(value)
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nextends: k210\nverify: {{atol: {value}}}\n")
    with pytest.raises(BadInputError, match="verify.atol"):
        cr.load_target(str(path))
    with pytest.raises(BadInputError, match="verify.rtol"):
        cr.load_target({"name": "t", "extends": "k210", "verify": {"rtol": number}})


def test_api_rejects_nan_tolerance():
    with pytest.raises(ConvRewriteError):
        cr.rewrite(conv_model(k=7), "k210", tolerance=Tolerance(atol=float("nan")))
    target = cr.load_target("k210")
    bad = dataclasses.replace(target, verify=dataclasses.replace(target.verify,
                                                                 rtol=float("nan")))
    with pytest.raises(ConvRewriteError):
        cr.rewrite(conv_model(k=7), bad)


def test_nan_tolerance_would_have_passed_a_real_mismatch():
    """Why NaN is rejected: with it, the bound comparison is always False, so nothing fails."""
    stats = compare(np.zeros(4), np.ones(4), 0.0, 0.0)
    assert not stats["passed"]


def test_inf_equals_inf_and_nan_at_the_same_place():
    ref = np.array([np.inf, -np.inf, np.nan, 1.0])
    assert compare(ref, ref.copy(), 1e-5, 1e-4)["passed"]
    assert not compare(ref, np.array([np.inf, np.inf, np.nan, 1.0]), 1e-5, 1e-4)["passed"]
    assert not compare(ref, np.array([np.inf, -np.inf, 0.0, 1.0]), 1e-5, 1e-4)["passed"]
    assert not compare(ref, np.array([1.0, -np.inf, np.nan, 1.0]), 1e-5, 1e-4)["passed"]


def test_identical_models_with_inf_outputs_verify():
    model = conv_model(k=3)
    inf = numpy_helper.from_array(np.array([np.inf], np.float32), "inf")
    model.graph.initializer.append(inf)
    model.graph.node.append(helper.make_node("Mul", ["y", "inf"], ["z"], name="blow_up"))
    model.graph.output[0].name = "z"
    report = cr.verify(model, model)
    assert report.status == "ok", report.end_to_end


def test_inf_weight_model_rewrites_and_verifies():
    model = conv_model(k=7, cin=4, cout=4)
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[1, 2, 3, 4] = np.inf
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "W"))
    rewritten, report = cr.rewrite(model, "k210")
    assert report.records and report.status == "ok", report.end_to_end
