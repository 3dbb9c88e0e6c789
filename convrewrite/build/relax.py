"""The Relax Builder (TVM's BlockBuilder): the lowerings' emitters (``build.builder``) build
Relax bindings through it, so a lowering runs natively on any Relax module, whichever frontend
made it. Weights that are constants are sliced and rearranged here (numpy); a computed weight (a
function parameter, as ``relax.frontend.nn`` and the PyTorch frontend make them) is cut in the
graph: ``strided_slice`` for ranges, ``take`` for reversed or strided taps, and a transposed
conv's laid out as a conv's by ``permute_dims`` (and ``reshape`` per group), which is all a plan
that only cuts or moves weights needs. TVM is imported only when a Builder is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decline import Declined
from ..plan.channels import sum_order
from ..weights import block_diagonal, respaced, selection_weight
from .relax_read import RELAX_CONVS, dims, op_name


INTEGER_CONVS_ONNX_ONLY = "integer convs (QLinearConv, ConvInteger) are split on ONNX only"


def _relax():
    from tvm import relax
    return relax


@dataclass
class RelaxWeight:
    """A conv weight in Relax: its numpy value when it is a constant, and its expression. A
    computed weight rearranged keeps its expression and the steps to build (``views``: a
    transposed conv's laid out in conv layout, ``conv_layout``; zero-extended, ``respaced``;
    reshaped, ``reshaped``; one tap of its first kernel axis, ``tap``); ``RelaxBuilder.weight``
    emits them, once per weight."""

    values: np.ndarray | None
    expr: object
    views: tuple = ()           # (kind, argument) steps from ``expr``, in order

    @property
    def quantized(self) -> bool:
        return False

    def _constant(self, what: str) -> np.ndarray:
        if self.values is None:
            raise Declined(f"{what} needs a constant weight; this one is computed in the graph")
        return self.values

    def _viewed(self, kind: str, argument) -> "RelaxWeight":
        return RelaxWeight(None, self.expr, (*self.views, (kind, argument)))

    def take_rows(self, rows: slice, name: str) -> "RelaxWeight":
        return RelaxWeight(np.ascontiguousarray(self._constant("taking rows")[rows]), None)

    def block_diagonal(self, groups: int) -> "RelaxWeight":
        return RelaxWeight(block_diagonal(self._constant("a block-diagonal weight"), groups), None)

    def respaced(self, kernel: tuple[int, ...], steps: tuple[int, ...] | None = None,
                 empty=None) -> "RelaxWeight":
        """The same taps in a larger kernel, zeros elsewhere (``weights.respaced``). A computed
        weight is zero-extended at the end of each axis in the graph (``RelaxBuilder.weight``);
        spreading its taps apart needs a constant."""
        if self.values is None and steps is None and not self.views:
            current = dims(self.expr)
            if current is not None and None not in current[2:]:
                if tuple(kernel) == tuple(current[2:]):
                    return self
                if all(k >= c for k, c in zip(kernel, current[2:])):
                    return self._viewed("extend", tuple(kernel))
        return RelaxWeight(respaced(self._constant("a larger kernel"), kernel, steps), None)

    def with_values(self, values: np.ndarray) -> "RelaxWeight":
        return RelaxWeight(np.ascontiguousarray(values), None)

    def reshaped(self, shape: tuple[int, ...]) -> "RelaxWeight":
        """The weight as ``shape`` (same elements in the same order)."""
        if self.values is None:
            return self._viewed("reshape", tuple(shape))
        return RelaxWeight(self.values.reshape(shape), None)

    def tap(self, t: int) -> "RelaxWeight":
        """``W[:, :, t]``: tap t of the first kernel axis, a weight one rank lower."""
        if self.values is None:
            return self._viewed("tap", t)
        return RelaxWeight(np.ascontiguousarray(self.values[:, :, t]), None)

    def conv_layout(self, groups: int) -> "RelaxWeight":
        """A transposed conv's [Cin, Cout/g, k...] weight as a conv's [Cout, Cin/g, k...]."""
        if self.values is None:
            return self._viewed("layout", groups)
        values = self.values
        cin, cout_g, *kernel = values.shape
        values = values.reshape(groups, cin // groups, cout_g, *kernel).swapaxes(1, 2)
        return RelaxWeight(np.ascontiguousarray(
            values.reshape(groups * cout_g, cin // groups, *kernel)), None)


def conv_like(call, x, w, groups: int, **overrides):
    """The same conv op and attributes as ``call`` on other operands and groups; ``overrides``
    in Relax's spelling (strides, padding, dilation, output_padding)."""
    relax = _relax()
    a = call.attrs
    op_type, rank = RELAX_CONVS[op_name(call)][:2]
    out_dtype = None if str(a.out_dtype) in ("", "void", "None") else str(a.out_dtype)
    kwargs = {"strides": list(a.strides), "padding": list(a.padding),
              "dilation": list(a.dilation), "groups": groups, "data_layout": a.data_layout,
              "kernel_layout": a.kernel_layout, "out_layout": a.out_layout,
              "out_dtype": out_dtype}
    if op_type == "ConvTranspose":
        kwargs["output_padding"] = list(a.output_padding)
        op = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose}[rank]
    else:
        op = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[rank]
    kwargs.update(overrides)
    return op(x, w, **kwargs)


class RelaxBuilder:
    """The Builder over a BlockBuilder: each op is one binding, named by the emitter's stem
    (a name hint: Relax keeps names unique itself). ``out`` is ignored: the expression an
    emitter returns replaces the conv call. ``call`` is the conv being replaced (its layouts
    and out_dtype carry over)."""

    def __init__(self, bb, call):
        self.bb = bb
        self.call = call
        self.bindings = 0
        # a computed weight's views, made once: id -> (weight, expression)
        self._views: dict[int, tuple] = {}

    def _emit(self, expr, name: str = ""):
        self.bindings += 1
        return self.bb.emit(expr, _hint(name))

    def fresh(self, wanted: str) -> str:
        return wanted

    def shape(self, x) -> list | None:
        found = dims(x)
        return None if found is None else list(found)

    def conv(self, site, inputs: list, name: str, attrs: dict, out=None, shape=None,
             op_type=None):
        if len(inputs) > 2:
            raise Declined("a Relax conv takes no bias")
        call_op, call_rank = RELAX_CONVS[op_name(self.call)][:2]
        rank = len(attrs.get("kernel_shape", ())) or call_rank
        if (op_type is not None and op_type != call_op) or rank != call_rank:
            return self._emit(self._plain_conv(inputs[0], inputs[1], op_type or call_op, attrs,
                                               rank), name)
        overrides = {"strides": list(attrs["strides"]) if "strides" in attrs else None,
                     "padding": list(attrs["pads"]) if "pads" in attrs else None,
                     "dilation": list(attrs["dilations"]) if "dilations" in attrs else None}
        if "output_padding" in attrs:
            overrides["output_padding"] = list(attrs["output_padding"])
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return self._emit(conv_like(self.call, inputs[0], inputs[1], int(attrs.get("group", 1)),
                                    **overrides), name)

    def _plain_conv(self, x, w, op_type: str, attrs: dict, rank: int):
        """A conv of another op or rank than the call (a Conv where the call was a transposed
        conv, the transposed lowering's; a 2-D conv where it was 1-D or 3-D, the rank
        lowering's): the channels-first layouts of that op and rank, ONNX attributes, the
        call's out_dtype."""
        relax = _relax()
        layouts = next((v for v in RELAX_CONVS.values() if v[:2] == (op_type, rank)), None)
        if layouts is None:
            raise Declined(f"a {rank}-D {op_type} in place of a Relax {op_name(self.call)} is "
                           "not built here")
        a = self.call.attrs
        if str(a.data_layout) != RELAX_CONVS[op_name(self.call)][2]:
            raise Declined(f"a conv in layout {a.data_layout} is lowered in channels-first "
                           "layouts only")
        out_dtype = None if str(a.out_dtype) in ("", "void", "None") else str(a.out_dtype)
        kwargs = dict(strides=list(attrs.get("strides", [1] * rank)),
                      padding=list(attrs.get("pads", [0] * 2 * rank)),
                      dilation=list(attrs.get("dilations", [1] * rank)),
                      groups=int(attrs.get("group", 1)), data_layout=layouts[2],
                      kernel_layout=layouts[3], out_dtype=out_dtype)
        if op_type == "ConvTranspose":
            kwargs["output_padding"] = list(attrs.get("output_padding", [0] * rank))
            op = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose}[rank]
        else:
            op = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[rank]
        return op(x, w, **kwargs)

    def weight(self, weight: RelaxWeight, index: tuple, stem: str):
        relax = _relax()
        if weight.values is not None:
            return relax.const(np.ascontiguousarray(weight.values[index]))
        expr = weight.expr
        made = self._views.get(id(weight))
        if made is not None and made[0] is weight:
            expr = made[1]
        elif weight.views:
            for kind, argument in weight.views:
                expr = self._view(expr, kind, argument, stem)
            self._views[id(weight)] = (weight, expr)
        axes, begin, end, strides, picks = [], [], [], [], []
        for axis, part in enumerate(index):
            if part == slice(None):
                continue
            if part.step not in (None, 1):          # reversed or strided taps: their indices
                picks.append((axis, part))
                continue
            axes.append(axis)
            begin.append(part.start or 0)
            end.append(part.stop)
            strides.append(1)
        if axes:
            expr = self._emit(relax.op.strided_slice(expr, axes, begin, end, strides),
                              f"{stem}.w")
        for axis, part in picks:
            taps = np.arange(dims(expr)[axis])[part].astype(np.int64)
            expr = self._emit(relax.op.take(expr, relax.const(taps), axis=axis),
                              f"{stem}.w.taps{axis}")
        return expr

    def _view(self, expr, kind: str, argument, stem: str):
        """One step of a computed weight's ``views``."""
        relax = _relax()
        if kind == "layout":
            return self._conv_layout(expr, argument, stem)
        if kind == "extend":
            widths = [0, 0, 0, 0]
            for k, c in zip(argument, dims(expr)[2:]):
                widths += [0, k - c]
            return self._emit(relax.op.nn.pad(expr, widths), f"{stem}.w.extended")
        if kind == "reshape":
            return self._emit(relax.op.reshape(expr, list(argument)), f"{stem}.w.shaped")
        shape = dims(expr)
        one = self._emit(relax.op.strided_slice(expr, [2], [argument], [argument + 1]),
                         f"{stem}.w.tap")
        return self._emit(relax.op.reshape(one, [*shape[:2], *shape[3:]]), f"{stem}.w.tap")

    def weight_taps(self, weight: RelaxWeight, stems: list, use_split: bool) -> list:
        return [self.weight(weight.tap(t), (slice(None),), stem) for t, stem in enumerate(stems)]

    def _conv_layout(self, expr, groups: int, stem: str):
        """A computed [Cin, Cout/g, k...] weight as [Cout, Cin/g, k...]: in/out channels
        swapped within each group."""
        relax = _relax()
        cin, cout_g, *kernel = dims(expr)
        taps = list(range(2, 2 + len(kernel)))
        if groups == 1:
            return self._emit(relax.op.permute_dims(expr, [1, 0, *taps]), f"{stem}.w.layout")
        grouped = self._emit(relax.op.reshape(expr, [groups, cin // groups, cout_g, *kernel]),
                             f"{stem}.w.groups")
        moved = self._emit(relax.op.permute_dims(grouped, [0, 2, 1, *(t + 1 for t in taps)]),
                           f"{stem}.w.swap")
        return self._emit(relax.op.reshape(moved, [groups * cout_g, cin // groups, *kernel]),
                          f"{stem}.w.layout")

    def bias(self, site, start: int, stop: int, stem: str):
        raise Declined("a Relax conv takes no bias")

    def bias_column(self, site, stem: str):
        raise Declined("a Relax conv takes no bias")

    def add(self, x, y, name: str, out=None):
        return self._emit(_relax().op.add(x, y), name)

    def channel_param(self, param, start: int, stop: int, name: str):
        raise Declined(INTEGER_CONVS_ONNX_ONLY)

    def uniform_param(self, param, name: str):
        raise Declined(INTEGER_CONVS_ONNX_ONLY)

    def requantize(self, acc, site, start: int, stop: int, stem: str, out=None):
        raise Declined(INTEGER_CONVS_ONNX_ONLY)

    def conv_integer_centred(self, site, x, w, start: int, stop: int, stem: str, attrs: dict,
                             shape=None):
        raise Declined(INTEGER_CONVS_ONNX_ONLY)

    def weight_zero_points(self, site):
        raise Declined(INTEGER_CONVS_ONNX_ONLY)

    def sum(self, terms: list, accumulate: str, stem: str, out=None):
        relax = _relax()
        operands = list(terms)
        for k, (i, j) in enumerate(sum_order(len(terms), accumulate)):
            operands.append(self._emit(relax.op.add(operands[i], operands[j]), f"{stem}.{k}"))
        return operands[-1]

    def concat(self, xs: list, axis: int, name: str, out=None, shape=None):
        return self._emit(_relax().op.concat(list(xs), axis=axis), name)

    def split_channels(self, x, ranges: list, stem: str, use_split: bool,
                       slice_stem: str) -> list:
        return self.split_axis(x, 1, ranges, stem, use_split, slice_stem)

    def split_axis(self, x, axis: int, ranges: list, stem: str, use_split: bool,
                   slice_stem: str) -> list:
        relax = _relax()
        if use_split:
            parts = self._emit(relax.op.split(x, [b for _, b in ranges[:-1]], axis=axis), stem)
            return [self._emit(relax.TupleGetItem(parts, i), f"{stem}.{i}")
                    for i in range(len(ranges))]
        return [self._emit(relax.op.strided_slice(x, [axis], [a], [b]), f"{slice_stem}.{i}")
                for i, (a, b) in enumerate(ranges)]


    def slice_axes(self, x, axes: list, starts: list, ends: list, steps: list, stem: str,
                   out=None):
        return self._emit(_relax().op.strided_slice(x, list(axes), list(starts), list(ends),
                                                    list(steps)), stem)

    def pad_spatial(self, x, begins: list, ends: list, stem: str, out=None, value=None):
        if value is not None:
            raise Declined(INTEGER_CONVS_ONNX_ONLY)
        if not any(begins) and not any(ends):
            return x
        widths = [0, 0, 0, 0]                   # Relax: (before, after) per axis, flattened
        for b, e in zip(begins, ends):
            widths += [int(b), int(e)]
        return self._emit(_relax().op.nn.pad(x, widths), stem)

    def reshape(self, x, shape: list, name: str, shape_name: str, out=None):
        """A 0 keeps the input's extent (static or symbolic), as ONNX's Reshape does."""
        extents = x.ty.shape.values if 0 in shape else None
        return self._emit(_relax().op.reshape(
            x, [extents[i] if d == 0 else d for i, d in enumerate(shape)]), name)

    def transpose(self, x, perm: list, name: str, out=None):
        return self._emit(_relax().op.permute_dims(x, list(perm)), name)

    def take_channels(self, x, source, channels: int, rank: int, use_gather: bool, stem: str,
                      out_stem: str):
        relax = _relax()
        if use_gather:
            return self._emit(relax.op.take(x, relax.const(np.asarray(source, np.int64)), axis=1),
                              out_stem)
        weight = selection_weight(source, channels, rank, np.dtype(str(x.ty.dtype)))
        conv = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[rank]
        return self._emit(conv(x, relax.const(weight)), out_stem)

    def depth_to_space(self, x, blocksize: int, name: str, out=None):
        """DepthToSpace (DCR, as the ONNX builder emits it) as Reshape, permute, Reshape: Relax
        has no such op."""
        def shapes(lead, c, h, w, b):
            return ([lead, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2],
                    [lead, c // (b * b), h * b, w * b])
        return self._move_blocks(x, blocksize, name, "DepthToSpace", shapes)

    def space_to_depth(self, x, blocksize: int, name: str, out=None):
        """SpaceToDepth (ONNX's, the inverse of DCR DepthToSpace) as Reshape, permute, Reshape:
        Relax has no such op."""
        def shapes(lead, c, h, w, b):
            return ([lead, c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4],
                    [lead, c * b * b, h // b, w // b])
        return self._move_blocks(x, blocksize, name, "SpaceToDepth", shapes)

    def _move_blocks(self, x, blocksize: int, name: str, what: str, shapes):
        """Reshape to the 6-D ``shapes(...)[0]``, permute, reshape to ``[2]``."""
        found = self.shape(x)
        if found is None or len(found) != 4 or any(d is None for d in found[1:]):
            raise Declined(f"{what} in Relax needs a 4-D input of static C, H, W")
        n, c, h, w = found
        relax = _relax()
        first, perm, last = shapes(-1 if n is None else n, c, h, w, blocksize)
        blocks = self._emit(relax.op.reshape(x, first), f"{name}.blocks")
        moved = self._emit(relax.op.permute_dims(blocks, perm), f"{name}.move")
        return self._emit(relax.op.reshape(moved, last), name)


def _hint(name: str) -> str:
    """A Relax name hint from a stem: ``conv5/in_split.0`` -> ``conv5_in_split_0``."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")
