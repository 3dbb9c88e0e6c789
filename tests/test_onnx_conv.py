"""Reading ConvSpecs out of ONNX nodes, for every conv op type."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from convrewrite.gs_graph import to_graph
from convrewrite.build.onnx_read import spec_of
from tests.conv_cases import conv_model


def quantized_model(op: str) -> onnx.ModelProto:
    cin, cout = 2048, 16
    w = numpy_helper.from_array(np.ones((cout, cin, 3, 3), np.int8), "w")
    scalars = {n: numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in [
        ("xs", 0.1, np.float32), ("xz", 0, np.uint8), ("ws", 0.1, np.float32), ("wz", 0, np.int8),
        ("ys", 0.1, np.float32), ("yz", 0, np.uint8)]}
    if op == "QLinearConv":
        node = helper.make_node(op, ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                                name="qconv", pads=[1, 1, 1, 1])
        out_type = TensorProto.UINT8
    else:
        node = helper.make_node(op, ["x", "w", "xz", "wz"], ["y"], name="iconv", pads=[1, 1, 1, 1])
        out_type = TensorProto.INT32
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info(
        "x", TensorProto.UINT8, [1, cin, 8, 8])], [helper.make_tensor_value_info(
            "y", out_type, [1, cout, 8, 8])], [w, *scalars.values()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_quantized_convs_are_described_and_checked():
    for op in ("QLinearConv", "ConvInteger"):
        model = quantized_model(op)
        node = next(n for n in to_graph(model).nodes if n.op == op)
        spec = spec_of(node)
        assert (spec.in_channels, spec.out_channels, spec.kernel_shape) == (2048, 16, (3, 3))
        assert spec.dtype == "uint8"
        report = cr.check(model, "k210")
        assert [v.rule for v in report.remaining[0].violations] == ["max_in_channels"]
        out, report = cr.rewrite(model, "k210")
        if op == "ConvInteger":                     # int32 chunks summed: exact
            assert report.status == "ok" and report.records[0].pass_name == "integer_split"
            assert report.records[0].verify["bit_exact"]
            continue
        # A QLinearConv's input chunks are requantized after their sum, with ops K210's list
        # lacks: named, not faked; on a target without an ops list it splits, bit-exact.
        assert out is model and report.status == "illegal"
        assert any("lacks Cast, ConvInteger, QuantizeLinear" in r
                   for r in report.remaining[0].reasons)
        out, report = cr.rewrite(model, {"name": "t", "conv": {"max_in_channels": 1024}})
        assert report.status == "ok" and report.records[0].tolerance == "exact"
        assert report.records[0].verify["bit_exact"]


def test_conv_transpose_channels_and_macs():
    model = conv_model(op="ConvTranspose", cin=8, cout=12, groups=2, strides=(2, 2),
                       spatial=(5, 5))
    node = next(n for n in to_graph(model).nodes if n.op == "ConvTranspose")
    spec = spec_of(node)
    assert (spec.in_channels, spec.out_channels, spec.groups) == (8, 12, 2)
    assert spec.weight_shape == (8, 6, 3, 3)
    assert spec.macs == 1 * 25 * 8 * 6 * 9


def test_unnamed_convs_get_stable_names():
    model = conv_model(cin=32, cout=8)
    model.graph.node[-1].name = ""
    out, report = cr.rewrite(model, {"conv": {"max_in_channels": 16}})
    assert report.records[0].node == "Conv_1"
