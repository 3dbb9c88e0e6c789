"""A small ONNX graph builder shared by every model in this package.

It tracks channels and spatial sizes, names nodes readably (``layer1.0/conv1``) and draws weights
from a seeded generator with He scaling (and small biases, as if BatchNorm had been folded), so
deep nets keep O(1) activations and the same seed always gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..naming import Names


@dataclass(frozen=True)
class T:
    """A tensor in the graph being built: name, channels and spatial extents (None: dynamic)."""

    name: str
    channels: int
    spatial: tuple[int, ...]


def _tuple(v, rank: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank


class GraphBuilder:
    def __init__(self, name: str, seed: int = 0, dtype=np.float32):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._unique = Names().fresh

    # -------------------------------------------------------------- plumbing

    def const(self, name: str, value: np.ndarray) -> str:
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        name = self._unique(name)
        self.nodes.append(helper.make_node(op, inputs, [f"{name}.out"], name=name, **attrs))
        return f"{name}.out"

    @property
    def elem_type(self) -> int:
        return helper.np_dtype_to_tensor_dtype(self.dtype)

    def input(self, name: str, channels: int, spatial: tuple[int, ...], batch="N") -> T:
        self.inputs.append(helper.make_tensor_value_info(name, self.elem_type,
                                                         [batch, channels, *spatial]))
        return T(name, channels, tuple(spatial))

    def output(self, t: T, name: str) -> None:
        """Expose ``t`` as a graph output called ``name`` (a plain name, as exporters give)."""
        self.nodes.append(helper.make_node("Identity", [t.name], [name],
                                           name=self._unique(f"{name}/identity")))
        self.outputs.append(onnx.ValueInfoProto(name=name))

    def build(self, opset: int = 17) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs,
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="convrewrite.models")
        model.ir_version = 8
        typed = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v for v in typed.graph.value_info}
        for out in model.graph.output:
            if out.name in known:
                out.CopyFrom(known[out.name])
        onnx.checker.check_model(model, full_check=True)
        return model

    # -------------------------------------------------------------- layers
    def conv(self, x: T, out_channels: int, kernel=3, stride=1, pad=None, dilation=1,
             groups: int = 1, bias: bool = True, name: str = "conv", gain: float = 2.0) -> T:
        rank = len(x.spatial)
        k, s, d = _tuple(kernel, rank), _tuple(stride, rank), _tuple(dilation, rank)
        p = _tuple(pad, rank) if pad is not None else tuple((ki - 1) // 2 * di
                                                            for ki, di in zip(k, d))
        fan_in = x.channels // groups * int(np.prod(k))
        w = self.rng.standard_normal((out_channels, x.channels // groups, *k)) \
            * np.sqrt(gain / fan_in)
        inputs = [x.name, self.const(f"{name}.weight", w.astype(self.dtype))]
        if bias:
            b = self.rng.standard_normal(out_channels) * 0.01
            inputs.append(self.const(f"{name}.bias", b.astype(self.dtype)))
        out = self.node("Conv", inputs, name, kernel_shape=list(k), strides=list(s),
                        pads=[*p, *p], dilations=list(d), group=groups)
        spatial = tuple(None if n is None else (n + 2 * pi - di * (ki - 1) - 1) // si + 1
                        for n, pi, di, ki, si in zip(x.spatial, p, d, k, s))
        return T(out, out_channels, spatial)

    def conv_transpose(self, x: T, out_channels: int, kernel=4, stride=2, pad=1,
                       output_padding=0, bias: bool = True, name: str = "deconv") -> T:
        rank = len(x.spatial)
        k, s = _tuple(kernel, rank), _tuple(stride, rank)
        p, op = _tuple(pad, rank), _tuple(output_padding, rank)
        fan_in = x.channels * int(np.prod(k)) // int(np.prod(s))
        w = self.rng.standard_normal((x.channels, out_channels, *k)) * np.sqrt(2.0 / fan_in)
        inputs = [x.name, self.const(f"{name}.weight", w.astype(self.dtype))]
        if bias:
            b = self.rng.standard_normal(out_channels) * 0.01
            inputs.append(self.const(f"{name}.bias", b.astype(self.dtype)))
        attrs = dict(kernel_shape=list(k), strides=list(s), pads=[*p, *p])
        if any(op):
            attrs["output_padding"] = list(op)
        out = self.node("ConvTranspose", inputs, name, **attrs)
        spatial = tuple(None if n is None else (n - 1) * si + ki - 2 * pi + oi
                        for n, si, ki, pi, oi in zip(x.spatial, s, k, p, op))
        return T(out, out_channels, spatial)

    def tanh(self, x: T, name: str) -> T:
        return T(self.node("Tanh", [x.name], name), x.channels, x.spatial)

    def relu(self, x: T, name: str) -> T:
        return T(self.node("Relu", [x.name], name), x.channels, x.spatial)

    def relu6(self, x: T, name: str) -> T:
        lo = self.const(f"{name}.min", np.array(0.0, self.dtype))
        hi = self.const(f"{name}.max", np.array(6.0, self.dtype))
        return T(self.node("Clip", [x.name, lo, hi], name), x.channels, x.spatial)

    def add(self, a: T, b: T, name: str) -> T:
        return T(self.node("Add", [a.name, b.name], name), a.channels, a.spatial)

    def maxpool(self, x: T, kernel: int, stride: int, pad: int, name: str) -> T:
        rank = len(x.spatial)
        out = self.node("MaxPool", [x.name], name, kernel_shape=[kernel] * rank,
                        strides=[stride] * rank, pads=[pad] * (2 * rank))
        spatial = tuple(None if n is None else (n + 2 * pad - kernel) // stride + 1
                        for n in x.spatial)
        return T(out, x.channels, spatial)

    def global_avg_pool(self, x: T, name: str) -> T:
        return T(self.node("GlobalAveragePool", [x.name], name), x.channels, (1,) * len(x.spatial))

    def linear(self, x: T, out_features: int, name: str) -> T:
        flat = self.node("Flatten", [x.name], f"{name}/flatten")
        w = self.rng.standard_normal((out_features, x.channels)) * np.sqrt(1.0 / x.channels)
        b = self.rng.standard_normal(out_features) * 0.01
        out = self.node("Gemm", [flat, self.const(f"{name}.weight", w.astype(self.dtype)),
                                 self.const(f"{name}.bias", b.astype(self.dtype))],
                        name, transB=1)
        return T(out, out_features, ())

    def concat(self, parts: list[T], name: str) -> T:
        out = self.node("Concat", [p.name for p in parts], name, axis=1)
        return T(out, sum(p.channels for p in parts), parts[0].spatial)
