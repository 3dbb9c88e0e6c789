"""Small float CNNs built with onnx.helper (no torch) and quantized by onnxruntime's own
quantizer in QOperator form (QLinearConv, QLinearAdd, ...), seeded: the shape of a ResNet-18
export after ``quantize_static(..., quant_format=QuantFormat.QOperator)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def resnet_like(stem: int = 7, size: int = 32, seed: int = 0) -> onnx.ModelProto:
    """A ResNet-like float net: a stem (``stem`` x ``stem``, stride 2), max pool, one basic
    block, one downsampling block (3x3 stride 2 and a 1x1 stride-2 shortcut), a 3x3 conv
    without padding, global pool and a Gemm head."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x, y, cin, cout, k, stride=1, pad=None, relu=False):
        name = f"conv{len(nodes)}"
        pad = k // 2 if pad is None else pad
        inits.append(numpy_helper.from_array(
            rng.normal(0, (2 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(np.float32),
            f"{name}.w"))
        inits.append(numpy_helper.from_array(rng.normal(0, 0.05, cout).astype(np.float32),
                                             f"{name}.b"))
        out = f"{y}.pre" if relu else y
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[pad] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [y], name=f"{name}.relu"))
        return y

    x = conv("x", "stem", 3, 8, stem, stride=2, relu=True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="pool", kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    a = conv("pool", "b1a", 8, 8, 3, relu=True)
    b = conv(a, "b1b", 8, 8, 3)
    nodes.append(helper.make_node("Add", [b, "pool"], ["b1s"], name="b1.add"))
    nodes.append(helper.make_node("Relu", ["b1s"], ["b1"], name="b1.relu"))
    a = conv("b1", "b2a", 8, 16, 3, stride=2, relu=True)
    b = conv(a, "b2b", 16, 16, 3)
    s = conv("b1", "b2s", 8, 16, 1, stride=2)
    nodes.append(helper.make_node("Add", [b, s], ["b2sum"], name="b2.add"))
    nodes.append(helper.make_node("Relu", ["b2sum"], ["b2"], name="b2.relu"))
    conv("b2", "valid", 16, 16, 3, pad=0, relu=True)
    nodes.append(helper.make_node("GlobalAveragePool", ["valid"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
    inits += [numpy_helper.from_array(rng.normal(0, 0.2, (10, 16)).astype(np.float32), "fc.w"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc",
                                  transB=1))
    graph = helper.make_graph(
        nodes, "resnet_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def quantized(model: onnx.ModelProto, work: Path, per_channel: bool = False,
              weight_type: str = "QInt8", seed: int = 0) -> onnx.ModelProto:
    """``model`` through onnxruntime's quantize_static in QOperator form (uint8 activations),
    calibrated on four seeded uniform [-1, 1] inputs."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = [{model.graph.input[0].name:
                             rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(4)]

        def get_next(self):
            return self.batches.pop() if self.batches else None

    source, target = work / "float.onnx", work / "qop.onnx"
    onnx.save(model, source)
    quantize_static(source, target, Calibration(), quant_format=QuantFormat.QOperator,
                    per_channel=per_channel, activation_type=QuantType.QUInt8,
                    weight_type=getattr(QuantType, weight_type))
    return onnx.load(target)
