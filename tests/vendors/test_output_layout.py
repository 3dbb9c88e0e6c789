"""The judge converts every model with its outputs in one layout: onnx2tf leaves a conv's output
channels-last but turns an Add's graph output back to NCHW (a TRANSPOSE Vela 3's core runs on the
CPU), so such an Add's output gets a parameter replacement that keeps it channels-last. These
run without the venvs; the vendor cases of test_lowerings judge the result (a kernel split's,
a channel split's and a ConvTranspose crop's final Add: all on the NPU)."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from convrewrite.vendors.survey import digest
from convrewrite.vendors.tflite import Job, conversion_tag, output_layout_replacements


def two_convs(last: str, shape=(1, 4, 8, 6)) -> onnx.ModelProto:
    """x -> conv a, conv b -> Add (or the second conv alone) -> y."""
    c = shape[1]
    w = numpy_helper.from_array(np.ones((c, c, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["a", "w"], ["b" if last == "Add" else "y"], name="conv_b")]
    if last == "Add":
        nodes.append(helper.make_node("Add", ["a", "b"], ["y"], name="sum"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_add_at_the_output_stays_channels_last():
    model = two_convs("Add")
    assert output_layout_replacements(model) == [
        {"op_name": "sum", "param_target": "outputs", "param_name": "y",
         "post_process_transpose_perm": [0, 2, 3, 1]}]
    assert conversion_tag(model) and digest(model).endswith(conversion_tag(model))


def test_conv_outputs_and_square_maps_are_left_alone():
    """A conv's output is channels-last already; where moving the channels last changes no
    extent (4 x 4 x 4) onnx2tf's rescue does not fire, so nothing is asked."""
    assert output_layout_replacements(two_convs("Conv")) == []
    assert output_layout_replacements(two_convs("Add", shape=(1, 4, 4, 4))) == []
    assert conversion_tag(two_convs("Conv")) == ""


def test_the_replacement_reaches_onnx2tf(tmp_path):
    model = two_convs("Add")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 4, 8, 6)).astype(np.float32)
    args = Job(model, [{"x": x}], tmp_path).prepare()
    assert args[args.index("-prf") + 1] == "replace.json"
    written = json.loads((tmp_path / "replace.json").read_text())
    assert written["operations"] == output_layout_replacements(model)
    plain = Job(two_convs("Conv"), [{"x": x}], tmp_path / "plain").prepare()
    assert "-prf" not in plain


def transpose_out(perm) -> onnx.ModelProto:
    """x -> conv -> Transpose(perm) -> y: a channels-last view moved back, as the sub-pixel
    ConvTranspose's channels-last interleave ends."""
    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv"),
             helper.make_node("Transpose", ["a"], ["y"], name="back", perm=perm)]
    shape = [[1, 4, 8, 6][p] for p in perm]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, (1, 4, 8, 6))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, shape)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_transpose_to_channels_first_at_the_output_moves_nothing():
    """onnx2tf writes a Transpose's output in ONNX's order: one to channels-first at the output
    gets the identity perm (what a conv's output would be); other perms are left alone."""
    assert output_layout_replacements(transpose_out([0, 3, 1, 2])) == [
        {"op_name": "back", "param_target": "attributes", "param_name": "perm",
         "values": [0, 1, 2, 3]}]
    assert output_layout_replacements(transpose_out([0, 2, 3, 1])) == []
    assert output_layout_replacements(transpose_out([0, 1, 3, 2])) == []
