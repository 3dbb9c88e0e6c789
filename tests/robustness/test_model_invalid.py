"""Invalid or unusual convs and models (issue 12, classes 2 and 4): our own validation names the
node in one line, exit 2, before onnxruntime sees the model; nothing is written, the input is
untouched. Models onnxruntime cannot verify say so in one line (or verify on onnx's reference
evaluator where onnxruntime only lacks a kernel, as for float64 convs)."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

import convrewrite as cr
from convrewrite.errors import BadInputError

from .model_cases import conv_model, run_cli, then

INVALID = {       # case: (model, words the one line must hold)
    "group 0": (lambda: conv_model(attrs={"group": 0}, wshape=(4, 4, 3, 3)), "group 0"),
    "group not dividing": (lambda: conv_model(attrs={"group": 3}, wshape=(4, 1, 3, 3)),
                           "group 3"),
    "group vs input channels": (lambda: conv_model(attrs={"group": 2}, wshape=(4, 1, 3, 3)),
                                "input channels"),
    "strides 0": (lambda: conv_model(attrs={"strides": [0, 1]}), "strides"),
    "strides wrong length": (lambda: conv_model(attrs={"strides": [1, 1, 1]}), "strides"),
    "dilations 0": (lambda: conv_model(attrs={"dilations": [0, 0]}), "dilations"),
    "negative pads": (lambda: conv_model(attrs={"pads": [-1, 0, 0, 0]}), "negative pads"),
    "pads wrong length": (lambda: conv_model(attrs={"pads": [1, 1]}), "expected 4 values"),
    "kernel larger than padded input": (lambda: conv_model(k=11, hw=4, attrs={"pads": [1] * 4}),
                                        "larger than the padded input"),
    "dilated kernel larger": (lambda: conv_model(k=3, hw=6, attrs={"dilations": [4, 4]}),
                              "larger than the padded input"),
    "kernel_shape contradicts weight": (lambda: conv_model(attrs={"kernel_shape": [5, 5]}),
                                        "kernel_shape"),
    "auto_pad unknown": (lambda: conv_model(attrs={"auto_pad": "FOO"}), "auto_pad"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_conv_is_one_line_exit_2_naming_the_node(tmp_path, case):
    build, words = INVALID[case]
    got = run_cli(tmp_path, build())
    assert got.code == 2, got.stderr
    assert len(got.stderr) == 1 and "'conv'" in got.stderr[0] and words in got.stderr[0], \
        got.stderr
    assert not got.written and got.input_unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("case", ["group 0", "strides 0", "pads wrong length"])
def test_invalid_conv_check_only_and_api(tmp_path, case):
    build, words = INVALID[case]
    assert run_cli(tmp_path, build(), "k210", "--check-only").code == 2
    with pytest.raises(BadInputError, match=words):
        cr.rewrite(build(), "k210")


def test_invalid_conv_inside_a_loop_body_is_named_with_its_path(tmp_path):
    body_conv = helper.make_node("Conv", ["x", "W"], ["y"], name="inner", strides=[0, 0])
    body = helper.make_graph([body_conv, helper.make_node("Identity", ["c"], ["c_out"])],
                             "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                                      helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("y", TensorProto.FLOAT, list("nchw"))])
    model = _loop_model(body)
    got = run_cli(tmp_path, model)
    assert got.code == 2 and "loop/body/inner" in got.stderr[0], got.stderr


def _loop_model(body: onnx.GraphProto) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "W")
    trip = numpy_helper.from_array(np.array(1, np.int64), "trip")
    cond = numpy_helper.from_array(np.array(True), "cond")
    loop = helper.make_node("Loop", ["trip", "cond"], ["ys"], name="loop", body=body)
    graph = helper.make_graph([loop], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 8, 8])], [helper.make_tensor_value_info(
            "ys", TensorProto.FLOAT, list("tnchw"))], [weight, trip, cond])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_duplicate_node_names(tmp_path):
    got = run_cli(tmp_path, then(conv_model(k=7), "Relu", "conv"))
    assert got.code == 2 and len(got.stderr) == 1 and "two nodes are named 'conv'" in \
        got.stderr[0], got.stderr
    assert not got.written


def test_opset_newer_than_onnx_knows(tmp_path):
    got = run_cli(tmp_path, conv_model(opset=99))
    assert got.code == 2 and len(got.stderr) == 1 and "opset 99" in got.stderr[0], got.stderr
    assert not got.written


def test_sparse_initializer(tmp_path):
    model = conv_model(k=7)
    values = numpy_helper.from_array(np.array([1.0], np.float32), "S")
    indices = numpy_helper.from_array(np.array([0], np.int64), "S_idx")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    got = run_cli(tmp_path, model)
    assert got.code == 2 and len(got.stderr) == 1 and "sparse initializer 'S'" in \
        got.stderr[0], got.stderr


def test_unknown_domain_needs_no_verify(tmp_path):
    """onnxruntime cannot run an op of a domain it does not know: verification cannot happen,
    which is bad input (exit 2, one line) unless --no-verify says to skip it."""
    model = then(conv_model(k=7), "Frob", "frob", domain="my.domain")
    got = run_cli(tmp_path, model)
    assert got.code == 2 and len(got.stderr) == 1 and "--no-verify" in got.stderr[0], got.stderr
    assert not got.written and got.input_unchanged
    got = run_cli(tmp_path, model, "k210", "--no-verify")
    assert got.code == 0 and got.written, got.stderr
    out = onnx.load(str(got.output))
    assert "frob" in {n.name for n in out.graph.node}


def test_float64_conv_verifies_on_the_reference_evaluator(tmp_path):
    """onnxruntime has no float64 Conv kernel: the comparison runs on onnx's reference
    evaluator instead, and still catches a wrong rewrite (the tolerance is float64's)."""
    got = run_cli(tmp_path, conv_model(k=7, dtype=TensorProto.DOUBLE), "k210",
                  "--report", str(tmp_path / "r.json"))
    assert got.code == 0, got.stderr
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["end_to_end"]["engine"] == "onnx.reference"
    assert report["end_to_end"]["passed"] and report["rewrites"]
    assert all(r["verify"]["passed"] for r in report["rewrites"])
    onnx.checker.check_model(onnx.load(str(got.output)), full_check=True)
