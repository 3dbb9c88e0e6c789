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

# He-style gains (weight variance gain / fan_in): what a conv's output feeds decides its gain.
RELU_GAIN = 2.0        # followed by ReLU, which halves the second moment: 2 keeps it
LINEAR_GAIN = 1.0      # a linear output (a shortcut projection, a bottleneck's projection)
# The last conv of a residual branch, summed onto the shortcut. Trained nets end such branches
# with a small BatchNorm gamma; without that the sum grows ~1.3x per block (ResNet-50's logits
# reached std 25). 0.5 keeps every stage of ResNet-50 within 1-5 and the branch still half the sum.
RESIDUAL_GAIN = 0.5
BIAS_STD = 0.01        # folded BatchNorm leaves a bias; small, so it never dominates


@dataclass(frozen=True)
class T:
    """A tensor in the graph being built: name, channels and spatial extents (None: dynamic)."""

    name: str
    channels: int
    spatial: tuple[int, ...]


def _tuple(v, rank: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank


class GraphBuilder:
    """Nodes, initializers and graph inputs/outputs of one model, built layer by layer.

    ``dtype`` (float32 or float16) applies to the whole model: inputs and every weight. Weights
    are drawn in float64 and cast, so a float16 model holds the float32 model's weights rounded.
    """

    def __init__(self, name: str, seed: int = 0, dtype=np.float32):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"model dtype must be a float type, got {self.dtype}")
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._unique = Names().fresh
        self.domains: set[str] = set()          # custom op domains the model uses

    # -------------------------------------------------------------- plumbing

    def const(self, name: str, value: np.ndarray) -> str:
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, domain: str = "", **attrs) -> str:
        name = self._unique(name)
        self.nodes.append(helper.make_node(op, inputs, [f"{name}.out"], name=name,
                                           domain=domain or None, **attrs))
        if domain:
            self.domains.add(domain)
        return f"{name}.out"

    def nodes_out(self, op: str, inputs: list[str], name: str, outputs: int, **attrs) -> list[str]:
        """A node with several outputs (Split)."""
        name = self._unique(name)
        names = [f"{name}.out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=name, **attrs))
        return names

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int, gain: float) -> str:
        """A He-initialised weight: variance ``gain / fan_in`` keeps activations O(1)."""
        w = self.rng.standard_normal(shape) * np.sqrt(gain / fan_in)
        return self.const(name, w.astype(self.dtype))

    def bias(self, name: str, size: int) -> str:
        return self.const(name, (self.rng.standard_normal(size) * BIAS_STD).astype(self.dtype))

    @property
    def elem_type(self) -> int:
        return helper.np_dtype_to_tensor_dtype(self.dtype)

    def input(self, name: str, channels: int, spatial: tuple[int, ...], batch="N") -> T:
        """A graph input [batch, channels, *spatial] of the model's dtype; ``batch`` is a size or
        a symbolic name, and the rank of ``spatial`` sets the rank of every conv after it."""
        self.inputs.append(helper.make_tensor_value_info(name, self.elem_type,
                                                         [batch, channels, *spatial]))
        return T(name, channels, tuple(spatial))

    def output(self, t: T, name: str) -> None:
        """Expose ``t`` as a graph output called ``name`` (a plain name, as exporters give)."""
        self.nodes.append(helper.make_node("Identity", [t.name], [name],
                                           name=self._unique(f"{name}/identity")))
        self.outputs.append(onnx.ValueInfoProto(name=name))

    def build(self, opset: int = 17) -> onnx.ModelProto:
        """The model, checked (full_check); outputs carry their inferred type and shape. IR 8 is
        what torch exports at opset 17, and every onnxruntime the package supports reads it."""
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs,
                                  self.initializers)
        opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1)
                                                     for d in sorted(self.domains)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="convrewrite.models")
        model.ir_version = 8
        typed = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v for v in typed.graph.value_info}
        for out in model.graph.output:
            if out.name in known:
                out.CopyFrom(known[out.name])
            else:       # behind an op shape inference does not know (our domain's)
                rank = len(self.inputs[0].type.tensor_type.shape.dim)
                out.CopyFrom(helper.make_tensor_value_info(out.name, self.elem_type,
                                                           [f"d{i}" for i in range(rank)]))
        onnx.checker.check_model(model, full_check=not self.domains)
        return model

    # -------------------------------------------------------------- layers

    def conv(self, x: T, out_channels: int, kernel=3, stride=1, pad=None, dilation=1,
             groups: int = 1, bias: bool = True, name: str = "conv",
             gain: float = RELU_GAIN) -> T:
        """A Conv of the input's rank (1-D, 2-D, 3-D); kernel, stride, pad and dilation are ints
        or per-axis tuples. ``pad=None`` pads ``(k - 1) // 2 * dilation`` on both sides ("same" at
        stride 1 for odd kernels)."""
        rank = len(x.spatial)
        k, s, d = _tuple(kernel, rank), _tuple(stride, rank), _tuple(dilation, rank)
        p = _tuple(pad, rank) if pad is not None else tuple((ki - 1) // 2 * di
                                                            for ki, di in zip(k, d))
        if x.channels % groups or out_channels % groups:
            raise ValueError(f"{name}: {x.channels} -> {out_channels} channels not divisible "
                             f"by groups={groups}")
        per_group = x.channels // groups
        inputs = [x.name, self.weight(f"{name}.weight", (out_channels, per_group, *k),
                                      per_group * int(np.prod(k)), gain)]
        if bias:
            inputs.append(self.bias(f"{name}.bias", out_channels))
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
        fan_in = x.channels * int(np.prod(k)) // int(np.prod(s))   # taps that reach one output
        inputs = [x.name, self.weight(f"{name}.weight", (x.channels, out_channels, *k), fan_in,
                                      RELU_GAIN)]
        if bias:
            inputs.append(self.bias(f"{name}.bias", out_channels))
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
        """ReLU6 as exporters write it: Clip with min/max inputs (opset 11+)."""
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

    def flatten(self, x: T, name: str) -> T:
        """[N, C, *spatial] -> [N, C * prod(spatial)]: features for a Gemm."""
        if None in x.spatial:
            raise ValueError(f"{name}: cannot flatten dynamic spatial dims {x.spatial}")
        features = x.channels * int(np.prod(x.spatial, dtype=np.int64))
        return T(self.node("Flatten", [x.name], name), features, ())

    def linear(self, x: T, out_features: int, name: str) -> T:
        """Flatten, then Gemm with a [out, in] weight (transB=1), as torch.nn.Linear exports."""
        flat = self.flatten(x, f"{name}/flatten")
        out = self.node("Gemm", [flat.name,
                                 self.weight(f"{name}.weight", (out_features, flat.channels),
                                             flat.channels, LINEAR_GAIN),
                                 self.bias(f"{name}.bias", out_features)],
                        name, transB=1)
        return T(out, out_features, ())

    def concat(self, parts: list[T], name: str) -> T:
        out = self.node("Concat", [p.name for p in parts], name, axis=1)
        return T(out, sum(p.channels for p in parts), parts[0].spatial)
