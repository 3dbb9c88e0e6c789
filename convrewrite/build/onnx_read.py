"""Reading ONNX graphs (onnx-graphsurgeon): constants, convs as ConvSpecs, conv weights.

Weights arrive in three forms: an initializer, a Constant node (possibly behind Identity), or a
DequantizeLinear of constant integers (QDQ models). ``ConstWeight`` hides the difference: a pass asks
for a slice and gets a tensor it can wire into a new node, with the quantisation parameters sliced
along when they are per-channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .. import weight_sum
from ..conv import CONV_OPS, ConvSpec
from ..decline import Decline, Declined
from ..weights import block_diagonal, conv_layout_views, respaced

# Input positions of the data, weight and bias tensors per op.
IO_POSITIONS = {
    "Conv": (0, 1, 2),
    "ConvTranspose": (0, 1, 2),
    "QLinearConv": (0, 3, 8),
    "ConvInteger": (0, 1, None),
}
# Input positions of the quantization parameters of the integer convs, by role.
QUANT_POSITIONS = {
    "QLinearConv": {"x_scale": 1, "x_zero_point": 2, "w_scale": 4, "w_zero_point": 5,
                    "y_scale": 6, "y_zero_point": 7},
    "ConvInteger": {"x_zero_point": 2, "w_zero_point": 3},
}
SCALES = ("x_scale", "w_scale", "y_scale")
INT64_MAX = np.iinfo(np.int64).max


def quant_operands(node: gs.Node) -> dict[str, gs.Tensor]:
    """An integer conv's quantization parameters by role, as the node holds them (an optional
    input left out is absent, or the unnamed placeholder where a later one is given); {} for
    float convs."""
    return {role: node.inputs[pos] for role, pos in QUANT_POSITIONS.get(node.op, {}).items()
            if pos < len(node.inputs)}


def conv_inputs(node: gs.Node, x: gs.Tensor | None = None,
                w: gs.Tensor | None = None) -> list[gs.Tensor]:
    """The conv node's inputs with the data input replaced by ``x`` and the weight by ``w``
    (where given), at their op's positions (``IO_POSITIONS``: a QLinearConv's weight is input
    3); every other input (quantization parameters, bias) as the node holds it."""
    inputs = list(node.inputs)
    x_pos, w_pos, _ = IO_POSITIONS[node.op]
    if x is not None:
        inputs[x_pos] = x
    if w is not None:
        inputs[w_pos] = w
    return inputs


def weight_zero_points(node: gs.Node, spec: ConvSpec) -> np.ndarray:
    """An integer conv's weight zero point per output channel (0 where it has none), what an
    empty tap of its kernel holds; Declined where it is computed in the graph."""
    return zero_points_of(quant_operands(node), node.name, spec)


def zero_points_of(quant: dict, name: str, spec: ConvSpec) -> np.ndarray:
    """``weight_zero_points`` from a conv's quantization operands by role (a ConvSite's)."""
    zero_point = quant.get("w_zero_point")
    if zero_point is None or not zero_point.name:
        return np.zeros(spec.out_channels, np.int64)
    values = constant_value(zero_point)
    if values is None:
        raise Declined(f"an empty tap of {name}'s kernel holds its weight zero point "
                       f"{zero_point.name!r}, computed in the graph")
    return np.broadcast_to(np.asarray(values).ravel(), (spec.out_channels,))


def _weight_zero_points(quant: dict[str, gs.Tensor]) -> tuple[int, ...]:
    if "w_zero_point" not in quant or not quant["w_zero_point"].name:
        return (0,)
    values = constant_value(quant["w_zero_point"])
    return () if values is None else tuple(sorted({int(v) for v in values.ravel()}))


def _shape(tensor: gs.Tensor) -> tuple[int | None, ...] | None:
    shape = getattr(tensor, "shape", None)
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


def dtype_name(tensor: gs.Tensor) -> str:
    dtype = getattr(tensor, "dtype", None)
    if dtype is None:
        return "unknown"
    if isinstance(dtype, int):
        return onnx.helper.tensor_dtype_to_np_dtype(dtype).name
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a tensor that is constant in the graph, following Constant and Identity."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) != 1:
        return None
    producer = tensor.inputs[0]
    if producer.op == "Constant":
        value = producer.attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
        return None
    if producer.op == "Identity":
        return constant_value(producer.inputs[0])
    return None


def spec_of(node: gs.Node) -> ConvSpec | Decline:
    """Describe a conv node, or say why it cannot be described (weights of unknown shape...)."""
    x_pos, w_pos, b_pos = IO_POSITIONS[node.op]
    x, w = node.inputs[x_pos], node.inputs[w_pos]
    w_shape = _shape(w)
    if w_shape is None or None in w_shape or len(w_shape) < 3:
        return Decline("weight shape is unknown")
    rank = len(w_shape) - 2
    attrs = node.attrs
    group = int(attrs.get("group", 1))
    if node.op == "ConvTranspose":
        cin, cout = w_shape[0], w_shape[1] * group
    else:
        cout, cin = w_shape[0], w_shape[1] * group
    x_shape = _shape(x)
    if x_shape is not None and len(x_shape) != rank + 2:
        x_shape = None
    y_shape = _shape(node.outputs[0]) if node.outputs else None
    if y_shape is not None and len(y_shape) != rank + 2:
        y_shape = None
    has_bias = b_pos is not None and len(node.inputs) > b_pos and bool(node.inputs[b_pos].name)
    quant = quant_operands(node)
    return ConvSpec(
        name=node.name,
        op_type=node.op,
        in_channels=cin,
        out_channels=cout,
        groups=group,
        kernel_shape=tuple(attrs.get("kernel_shape", w_shape[2:])),
        strides=tuple(attrs.get("strides", (1,) * rank)),
        dilations=tuple(attrs.get("dilations", (1,) * rank)),
        pads=tuple(attrs.get("pads", (0,) * (2 * rank))),
        auto_pad=_text(attrs.get("auto_pad", "NOTSET")),
        output_padding=tuple(attrs.get("output_padding", ())),
        output_size=tuple(attrs["output_shape"][-rank:]) if "output_shape" in attrs else None,
        input_shape=x_shape,
        output_shape=y_shape,
        dtype=dtype_name(x),
        has_bias=has_bias,
        constant_weight=not isinstance(const_weight(w), Decline),
        constant_bias=not has_bias or constant_value(node.inputs[b_pos]) is not None,
        weight_sum=partial(_weight_sum, w, node.op == "ConvTranspose", group),
        weight_zero_points=_weight_zero_points(quant),
        constant_scales=all(constant_value(quant[r]) is not None for r in SCALES if r in quant),
    )


def _weight_sum(w: gs.Tensor, transposed: bool, groups: int) -> int | None:
    """The quantized weight sum Vela checks (weight_sum.py), for constant weights."""
    weight = const_weight(w)
    if not isinstance(weight, ConstWeight) or weight.values.size == 0 or not (
            np.issubdtype(weight.values.dtype, np.floating)
            or np.issubdtype(weight.values.dtype, np.integer)):
        return None                     # not a constant, or a type numpy cannot take |w| of
    zero_point = None
    if weight.quantized:
        if weight.axis % weight.values.ndim != (1 if transposed else 0) and \
                np.asarray(constant_value(weight.scale)).size > 1:
            return None                 # per-channel along another axis: not TFLite's scheme
        zero_point = None if weight.zero_point is None else constant_value(weight.zero_point)
    return weight_sum.remembered_largest(weight.values, transposed, groups, zero_point)


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class ConstWeight:
    """A constant conv weight, plain or DequantizeLinear(q, scale, zero_point)."""

    values: np.ndarray                  # float weights, or the quantized integers
    scale: gs.Tensor | None = None      # set for QDQ weights
    zero_point: gs.Tensor | None = None
    axis: int = 1
    out_dtype: object = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def slice(self, graph_name: str, index: tuple[slice, ...]) -> tuple[gs.Tensor, list[gs.Node]]:
        """A tensor holding ``W[index]`` (dequantized the same way as the original when QDQ) and
        the nodes that compute it."""
        part = gs.Constant(f"{graph_name}.w", np.ascontiguousarray(self.values[index]))
        if not self.quantized:
            return part, []
        axis = self.axis % self.values.ndim
        inputs = [part, self._param(self.scale, index[axis] if axis < len(index) else None,
                                    f"{graph_name}.w_scale")]
        if self.zero_point is not None:
            inputs.append(self._param(self.zero_point, index[axis] if axis < len(index) else None,
                                      f"{graph_name}.w_zero_point"))
        out = gs.Variable(f"{graph_name}.w_dq", dtype=self.out_dtype, shape=list(part.shape))
        attrs = {"axis": self.axis} if np.asarray(constant_value(self.scale)).size > 1 else {}
        return out, [gs.Node("DequantizeLinear", f"{graph_name}/w_dq", attrs, inputs, [out])]

    def respaced(self, kernel: tuple[int, ...], steps: tuple[int, ...] | None = None,
                 empty: np.ndarray | None = None) -> "ConstWeight":
        """The same taps in a larger kernel (``weights.respaced``), every other position zero
        (for QDQ weights: the zero point, which dequantizes to zero; ``empty`` where given, per
        output channel: an integer conv's weight zero point)."""
        ndim = self.values.ndim
        fill = 0
        if empty is not None:
            fill = np.asarray(empty, self.values.dtype).reshape(-1, *[1] * (ndim - 1))
        elif self.quantized and self.zero_point is not None:
            fill = np.asarray(constant_value(self.zero_point))
            if fill.size > 1:
                axis_shape = [1] * ndim
                axis_shape[self.axis % ndim] = -1
                fill = fill.reshape(axis_shape)
        return ConstWeight(respaced(self.values, kernel, steps, fill), self.scale,
                           self.zero_point, self.axis, self.out_dtype)

    def take_rows(self, rows: slice, name: str) -> "ConstWeight":
        """Output channels ``rows`` (axis 0), with per-channel parameters cut to match."""
        axis0 = self.axis % self.values.ndim == 0
        scale = self.scale if self.scale is None or not axis0 else \
            self._param(self.scale, rows, f"{name}.w_scale")
        zero_point = self.zero_point if self.zero_point is None or not axis0 else \
            self._param(self.zero_point, rows, f"{name}.w_zero_point")
        return ConstWeight(np.ascontiguousarray(self.values[rows]), scale, zero_point, self.axis,
                           self.out_dtype)

    def block_diagonal(self, groups: int) -> "ConstWeight":
        """[groups * o, i, k...] grouped weights as one dense [groups * o, groups * i, k...]
        weight, zero (or the zero point) off the diagonal blocks."""
        fill = 0
        if self.quantized and self.zero_point is not None:
            zp = np.asarray(constant_value(self.zero_point))
            fill = zp.reshape(-1, *[1] * (self.values.ndim - 1)) if zp.size > 1 else zp
        return self.with_values(block_diagonal(self.values, groups, fill))

    def conv_layout(self, groups: int) -> "ConstWeight":
        """A ConvTranspose weight [Cin, Cout/g, k...] as a Conv weight [Cout, Cin/g, k...]
        (taps unflipped); per-channel parameters on its output axis (1) move to axis 0."""
        cin, cout_g, *kernel = self.values.shape
        values = self.values.reshape(groups, cin // groups, cout_g, *kernel)
        values = values.swapaxes(1, 2).reshape(groups * cout_g, cin // groups, *kernel)
        axis = self.axis
        if self.quantized and np.asarray(constant_value(self.scale)).size > 1:
            if groups != 1:
                raise Declined("per-channel quantized grouped ConvTranspose weights are not "
                               "lowered")
            axis = {0: 1, 1: 0}.get(axis % self.values.ndim, axis)
        return ConstWeight(np.ascontiguousarray(values), self.scale, self.zero_point, axis,
                           self.out_dtype)

    def reshaped(self, shape: tuple[int, ...]) -> "ConstWeight":
        """The weight as ``shape`` (same elements in the same order; output channels stay on
        axis 0)."""
        return self.with_values(self.values.reshape(shape))

    def kernel_taps(self, names: list[str], use_split: bool = False
                    ) -> list[tuple[gs.Tensor, list[gs.Node]]]:
        """``W[:, :, t]`` for every tap t of the first kernel axis (one per name): a constant
        each (dequantized like the original when QDQ)."""
        return [self.with_values(self.values[:, :, t]).slice(name, (slice(None),))
                for t, name in enumerate(names)]

    def with_values(self, values: np.ndarray) -> "ConstWeight":
        """Rearranged taps (same output channels on axis 0, so per-channel parameters hold)."""
        if self.quantized and np.asarray(constant_value(self.scale)).size > 1 \
                and self.axis % self.values.ndim != 0:
            raise ValueError("per-channel parameters on an axis other than 0")
        return ConstWeight(np.ascontiguousarray(values), self.scale, self.zero_point, self.axis,
                           self.out_dtype)

    @staticmethod
    def _param(tensor: gs.Tensor, index: slice | None, name: str) -> gs.Tensor:
        value = constant_value(tensor)
        if value is None or value.size <= 1 or index is None:
            return tensor                           # per-tensor: share the original
        return gs.Constant(name, np.ascontiguousarray(value[index]))


@dataclass
class RuntimeWeight:
    """A conv weight known only at run time (a graph input, or computed from one: NF-Nets' weight
    standardisation, a modulated conv, weight norm kept in the graph). Lowerings that only cut
    the weight (channel chunks, taps, the whole of it, reversed) get Slice nodes on the tensor
    itself, a kernel zero-extended at its end a Pad of it, a new layout (``reshaped``, a
    ConvTranspose weight in conv layout) Reshape / Transpose nodes on it; whatever needs its
    values (taps respaced into a dense dilated kernel, a block-diagonal weight, rearranged taps)
    declines with the reason. The layout ops and the Pad are made once, where the weight is
    first sliced, and shared by every slice of it."""

    tensor: gs.Tensor
    shape: tuple[int, ...]
    origin: str                         # where it comes from, for the reason
    opset: int = 17
    pad_ends: tuple[int, ...] = ()      # zeros to append per axis (``respaced``), else none
    _padded: list = field(default_factory=list, compare=False)   # the Pad's output, once made
    # the layout ops applied to ``tensor`` before any pad: (op, output shape, perm or ())
    # (``reshaped``, ``conv_layout``); their last output, once made, shared by the weights
    # derived from it
    views: tuple = ()
    _viewed: list = field(default_factory=list, compare=False)

    quantized = False

    def _needs_values(self, what: str):
        raise Declined(f"{what} needs the weight's values; it is computed at run time "
                       f"({self.origin})")

    @property
    def values(self) -> np.ndarray:
        self._needs_values("reading the weight")

    def slice(self, graph_name: str, index: tuple[slice, ...]) -> tuple[gs.Tensor, list[gs.Node]]:
        """A tensor holding ``W[index]``: the weight itself, or one Slice of it (of its
        zero-extended form, padded once, with the first slice). A zero-extended weight taken
        whole is extended by Concat with zeros instead: onnxruntime (1.32) fuses a Pad that
        feeds only a Conv into that Conv's pads without asking which input it feeds, and
        fails to load the model when it is the weight."""
        if self.pad_ends and all(range(*part.indices(n)) == range(n)
                                 for part, n in zip(index, self.shape)):
            return self._concat_zeros(graph_name)
        source, made = self._source(graph_name)
        part, nodes = self._slice(source, graph_name, index)
        return part, made + nodes

    def _concat_zeros(self, graph_name: str) -> tuple[gs.Tensor, list[gs.Node]]:
        """The zero-extended weight whole: per extended axis a Concat with zeros."""
        source, made = self._view_source(graph_name)
        shape = [n - e for n, e in zip(self.shape, self.pad_ends)]
        dtype = self.tensor.dtype if self.tensor.dtype is not None else np.float32
        for axis, extra in enumerate(self.pad_ends):
            if not extra:
                continue
            zeros = list(shape)
            zeros[axis] = extra
            shape[axis] += extra
            out = gs.Variable(f"{graph_name}.w_zero_extended{axis}", dtype=self.tensor.dtype,
                              shape=list(shape))
            made.append(gs.Node("Concat", f"{graph_name}/w_zero_extend{axis}", {"axis": axis},
                                [source, gs.Constant(f"{graph_name}.w_zeros{axis}",
                                                     np.zeros(zeros, dtype=dtype))], [out]))
            source = out
        return source, made

    def _source(self, graph_name: str) -> tuple[gs.Tensor, list[gs.Node]]:
        viewed, made = self._view_source(graph_name)
        if not self.pad_ends:
            return viewed, made
        if self._padded:
            return self._padded[0], made
        out = gs.Variable(f"{graph_name}.w_padded", dtype=self.tensor.dtype,
                          shape=list(self.shape))
        pads = [0] * len(self.shape) + list(self.pad_ends)
        if self.opset >= 11:
            node = gs.Node("Pad", f"{graph_name}/w_pad", {"mode": "constant"},
                           [viewed, gs.Constant(f"{graph_name}.w_pads",
                                                np.asarray(pads, dtype=np.int64))], [out])
        else:
            node = gs.Node("Pad", f"{graph_name}/w_pad", {"mode": "constant", "pads": pads},
                           [viewed], [out])
        self._padded.append(out)
        return out, made + [node]

    def _view_source(self, graph_name: str) -> tuple[gs.Tensor, list[gs.Node]]:
        """The tensor in its new layout (``views`` applied), made once."""
        if not self.views:
            return self.tensor, []
        if self._viewed:
            return self._viewed[0], []
        source, made = self.tensor, []
        for n, (op, shape, perm) in enumerate(self.views):
            out = gs.Variable(f"{graph_name}.w_view{n}", dtype=self.tensor.dtype,
                              shape=list(shape))
            if op == "Transpose":
                made.append(gs.Node("Transpose", f"{graph_name}/w_transpose{n}",
                                    {"perm": list(perm)}, [source], [out]))
            else:
                made.append(gs.Node("Reshape", f"{graph_name}/w_reshape{n}", {},
                                    [source, gs.Constant(f"{graph_name}.w_shape{n}",
                                                         np.asarray(shape, dtype=np.int64))],
                                    [out]))
            source = out
        self._viewed.append(source)
        return source, made

    def _viewing(self, *views) -> "RuntimeWeight":
        """This weight with layout ``views`` ((op, output shape, perm)) applied after its own."""
        if self.pad_ends:
            raise ValueError("a zero-extended weight is not laid out anew")
        return RuntimeWeight(self.tensor, tuple(views[-1][1]), self.origin, self.opset,
                             views=self.views + tuple(views))

    def reshaped(self, shape: tuple[int, ...]) -> "RuntimeWeight":
        """The weight as ``shape`` (same elements in the same order): a Reshape of it."""
        if tuple(shape) == tuple(self.shape):
            return self
        return self._viewing(("Reshape", tuple(shape), ()))

    def kernel_taps(self, names: list[str], use_split: bool = False
                    ) -> list[tuple[gs.Tensor, list[gs.Node]]]:
        """``W[:, :, t]`` for every tap t of the first kernel axis (one per name): a weight one
        rank lower. Per tap a strided Slice of the weight viewed as [O, I*k, rest...] (input
        channel i of tap t is channel i*k + t); or, ``use_split``, one Split of it viewed as
        [O, I, k, rest] and a Reshape per piece."""
        out_c, in_c, k, *rest = self.shape
        if use_split:
            flat = math.prod(rest)
            source, made = self.reshaped((out_c, in_c, k, flat))._source(f"{names[0]}.taps")
            pieces = [gs.Variable(f"{name}.w_tap", dtype=self.tensor.dtype,
                                  shape=[out_c, in_c, 1, flat]) for name in names]
            if self.opset >= 13:
                made.append(gs.Node("Split", f"{names[0]}/w_split", {"axis": 2},
                                    [source, gs.Constant(f"{names[0]}.w_split_sizes",
                                                         np.ones(k, dtype=np.int64))], pieces))
            else:
                made.append(gs.Node("Split", f"{names[0]}/w_split",
                                    {"axis": 2, "split": [1] * k}, [source], pieces))
            taps = []
            for t, (piece, name) in enumerate(zip(pieces, names)):
                tensor, nodes = RuntimeWeight(piece, (out_c, in_c, 1, flat), self.origin,
                                              self.opset).reshaped((out_c, in_c, *rest)).slice(
                                                  name, ())
                taps.append((tensor, (made if t == 0 else []) + nodes))
            return taps
        folded = self.reshaped((out_c, in_c * k, *rest))
        return [folded.slice(name, (slice(None), slice(t, None, k))) for t, name in enumerate(names)]

    def _slice(self, source: gs.Tensor, graph_name: str,
               index: tuple[slice, ...]) -> tuple[gs.Tensor, list[gs.Node]]:
        axes, starts, ends, steps, shape = [], [], [], [], list(self.shape)
        for axis, part in enumerate(index):
            start, stop, step = part.indices(self.shape[axis])
            if range(start, stop, step) == range(self.shape[axis]):
                continue
            axes.append(axis)
            starts.append(start)
            # a reversed slice through index 0: an end before the first element (ONNX reads a
            # negative end from the back)
            ends.append(-INT64_MAX if stop < 0 else stop)
            steps.append(step)
            shape[axis] = len(range(start, stop, step))
        if not axes:
            return source, []
        out = gs.Variable(f"{graph_name}.w", dtype=self.tensor.dtype, shape=shape)
        if self.opset < 10:
            if any(step != 1 for step in steps):
                raise Declined("a strided slice of a weight computed at run time needs opset 10")
            return out, [gs.Node("Slice", f"{graph_name}/w_slice",
                                 {"starts": starts, "ends": ends, "axes": axes},
                                 [source], [out])]
        consts = [gs.Constant(f"{graph_name}.w_{k}", np.asarray(v, dtype=np.int64))
                  for k, v in (("starts", starts), ("ends", ends), ("axes", axes),
                               ("steps", steps))]
        return out, [gs.Node("Slice", f"{graph_name}/w_slice", {}, [source, *consts], [out])]

    def respaced(self, kernel: tuple[int, ...],
                 steps: tuple[int, ...] | None = None) -> "RuntimeWeight":
        """The same taps in a kernel zero-extended at its end (a Pad of the weight, made where
        it is first sliced); writing a dilation into the kernel needs its values."""
        if any(step != 1 for step in steps or ()):
            self._needs_values("a dilated dense kernel")
        extra = tuple(k - n for k, n in zip(kernel, self.shape[2:]))
        if any(e < 0 for e in extra) or len(extra) != len(self.shape) - 2:
            raise ValueError(f"kernel {kernel} does not hold {self.shape[2:]}")
        if not any(extra):
            return self
        padded = (*self.shape[:2], *kernel)
        return RuntimeWeight(self.tensor, padded, self.origin, self.opset,
                             tuple(a + b for a, b in zip(self.pad_ends, (0, 0, *extra)))
                             if self.pad_ends else (0, 0, *extra), views=self.views,
                             _viewed=self._viewed)

    def take_rows(self, rows: slice, name: str):
        self._needs_values("a block-diagonal weight")

    def block_diagonal(self, groups: int):
        self._needs_values("a block-diagonal weight")

    def conv_layout(self, groups: int) -> "RuntimeWeight":
        """A ConvTranspose weight [Cin, Cout/g, k...] as a Conv weight [Cout, Cin/g, k...]
        (taps unflipped): Reshape / Transpose of it (``weights.conv_layout_views``)."""
        views = conv_layout_views(self.shape, groups)
        return self._viewing(*views) if views else self

    def with_values(self, values: np.ndarray):
        self._needs_values("rearranging the weight's taps")


def conv_weight(tensor: gs.Tensor, opset: int = 17) -> "ConstWeight | RuntimeWeight | Decline":
    """The weight behind ``tensor`` as lowerings slice it: a constant one, or one computed at
    run time (sliced in the graph; its shape must be known), or why neither."""
    weight = const_weight(tensor)
    source = _graph_input_behind(tensor)
    if not isinstance(weight, Decline) or source is None:
        return weight
    shape = _shape(tensor)
    if shape is None or None in shape:
        return Decline(f"the weight {tensor.name!r} is computed at run time and its shape is "
                       "unknown")
    return RuntimeWeight(tensor, shape, _origin(tensor, source), opset)


def _origin(tensor: gs.Tensor, source: gs.Tensor) -> str:
    return f"{tensor.name!r} is " + ("a graph input" if source is tensor else
                                     f"computed from graph input {source.name!r}")


def runtime_operands(node: gs.Node) -> list[gs.Tensor]:
    """The conv's weight and bias tensors known only at run time (behind a graph input): a local
    check of its rewrite feeds them as they reach it, like its data input."""
    _, w_pos, b_pos = IO_POSITIONS[node.op]
    found: list[gs.Tensor] = []
    for pos in (w_pos, b_pos):
        if pos is None or len(node.inputs) <= pos or not node.inputs[pos].name:
            continue
        t = node.inputs[pos]
        if _graph_input_behind(t) is not None and all(t is not f for f in found) \
                and t is not node.inputs[0]:
            found.append(t)
    return found


def const_weight(tensor: gs.Tensor) -> ConstWeight | Decline:
    """The constant weight behind ``tensor``, or why it is not one we can slice."""
    value = constant_value(tensor)
    if value is not None:
        return ConstWeight(value)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "DequantizeLinear":
        dq = tensor.inputs[0]
        if dq.attrs.get("block_size", 0):
            return Decline("blocked quantisation of the weight is not supported")
        q = constant_value(dq.inputs[0])
        scale = dq.inputs[1]
        zero_point = dq.inputs[2] if len(dq.inputs) > 2 and dq.inputs[2].name else None
        if q is None or constant_value(scale) is None or (
                zero_point is not None and constant_value(zero_point) is None):
            return Decline("the weight's DequantizeLinear has non-constant inputs")
        axis = int(dq.attrs.get("axis", 1))
        bad = quant_params_mismatch(q, axis, constant_value(scale),
                                     None if zero_point is None else constant_value(zero_point))
        if bad:
            return Decline(f"the weight's DequantizeLinear {bad}")
        return ConstWeight(q, scale, zero_point, axis, tensor.dtype)
    return Decline("the weight is not a constant (initializer, Constant or DequantizeLinear of "
                   "constants)")


def quant_params_mismatch(q: np.ndarray, axis: int, scale: np.ndarray,
                           zero_point: np.ndarray | None) -> str | None:
    """Why a DequantizeLinear's scale / zero point cannot dequantize the weight ``q``: every
    rule that reads the quantized weight (weight sums, slicing per-channel parameters) relies on
    them being per-tensor (one value) or per-axis (1-D, one value per index of ``axis``); None
    when they are."""
    if not -q.ndim <= axis < q.ndim:
        return f"has axis {axis}, out of range for a weight of rank {q.ndim}"
    length = q.shape[axis]
    for role, value in (("scale", scale), ("zero point", zero_point)):
        if value is None:
            continue
        value = np.asarray(value)
        if value.size == 1 and value.ndim <= 1:
            continue
        if value.ndim != 1 or value.shape[0] != length:
            return (f"{role} has shape {list(value.shape)}: neither per-tensor nor per-axis "
                    f"(length {length} on axis {axis})")
    if zero_point is not None and np.asarray(zero_point).size != np.asarray(scale).size:
        return (f"zero point has shape {list(np.asarray(zero_point).shape)}, its scale "
                f"{list(np.asarray(scale).shape)}")
    return None


def runtime_operand(node: gs.Node) -> Decline | None:
    """That a conv's weight or bias is a graph input (or computed from one), so its values are
    known only at run time (weight folding leaves it: ``conv_weight`` slices it in the graph);
    None when both are constant or computed from constants only."""
    _, w_pos, b_pos = IO_POSITIONS[node.op]
    for role, pos in (("weight", w_pos), ("bias", b_pos)):
        if pos is None or len(node.inputs) <= pos or not node.inputs[pos].name:
            continue
        source = _graph_input_behind(node.inputs[pos])
        if source is not None:
            return Decline(f"the {role} {_origin(node.inputs[pos], source)}, not a constant: "
                           "known only at run time")
    return None


def _graph_input_behind(tensor: gs.Tensor) -> gs.Tensor | None:
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        if id(t) in seen or isinstance(t, gs.Constant):
            continue
        seen.add(id(t))
        if not t.inputs:
            return t
        stack.extend(i for producer in t.inputs for i in producer.inputs)
    return None


def conv_nodes(graph: gs.Graph) -> list[gs.Node]:
    """The standard-domain conv nodes of a graph, in its order."""
    return [n for n in graph.nodes if n.op in CONV_OPS and n.domain in ("", "ai.onnx", None)]
