"""The ONNX Builder (onnx-graphsurgeon): the lowerings' emitters (``build.builder``), the sparse
lowerings, SparseConv's dense reference and the dense->sparse pass write their nodes through it.
Names are readable and deterministic (``conv5/in_split.0``); where the input's shape is known the
output's is set too, so the next legality check sees real extents."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..decline import Declined
from ..plan.channels import sum_order
from ..weights import selection_weight
from .onnx_read import INT64_MAX, constant_value, zero_points_of

INT64 = onnx.TensorProto.INT64


def sliced_extent(extent, start: int, end: int, step: int):
    """The extent ``extent[start:end:step]`` has (None where ``extent`` is not static)."""
    if not isinstance(extent, int):
        return None
    return len(range(extent)[slice(start, None if end >= INT64_MAX else end, step)])


def conv_output_shape(x: gs.Tensor, out_channels: int, kernel, strides, dilations, pads):
    """The static output shape of a conv, or None where the input's is unknown."""
    if x.shape is None or len(x.shape) != len(kernel) + 2:
        return None
    rank = len(kernel)
    spatial = []
    for i, extent in enumerate(x.shape[2:]):
        if not isinstance(extent, int):
            spatial.append(None)
            continue
        span = extent + pads[i] + pads[i + rank] - (kernel[i] - 1) * dilations[i] - 1
        spatial.append(span // strides[i] + 1)
    return [x.shape[0], out_channels, *spatial]


class OnnxBuilder:
    """Writes ONNX nodes into ``nodes``: by op type under ``stem`` (``op``, ``const``, ...), or
    as the Builder of ``build.builder`` (``conv``, ``sum``, ``concat``, ...) with the names the
    emitter gives. ``opset`` picks the attribute or input form of Split, Pad and Unsqueeze;
    ``regroupable`` collects the chain Adds that sum fusion may regroup later."""

    def __init__(self, fresh: Callable[[str], str], stem: str, opset: int = 17,
                 regroupable: set[str] | None = None):
        self.fresh = fresh
        self.stem = stem
        self.opset = opset
        self.regroupable = regroupable if regroupable is not None else set()
        self.nodes: list[gs.Node] = []

    def const(self, name: str, value) -> gs.Constant:
        return gs.Constant(self.fresh(f"{self.stem}/{name}"), np.asarray(value))

    def i64(self, name: str, values) -> gs.Constant:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list, name: str, out: gs.Tensor | None = None,
           dtype=None, shape=None, **attrs) -> gs.Tensor:
        """One node of one output (``out`` when given, else a fresh variable)."""
        node_name = self.fresh(f"{self.stem}/{name}")
        result = out if out is not None else gs.Variable(self.fresh(f"{node_name}.out"),
                                                         dtype=dtype, shape=shape)
        self.nodes.append(gs.Node(op_type, node_name, attrs, list(inputs), [result]))
        return result

    def multi(self, op_type: str, inputs: list, name: str, outputs: int, **attrs) -> list[gs.Tensor]:
        node_name = self.fresh(f"{self.stem}/{name}")
        results = [gs.Variable(self.fresh(f"{node_name}.out{i}")) for i in range(outputs)]
        self.nodes.append(gs.Node(op_type, node_name, attrs, list(inputs), results))
        return results

    def zeros(self, shape: gs.Tensor, like: gs.Tensor, name: str, value: float = 0.0) -> gs.Tensor:
        """A tensor of ``shape`` (a runtime int64 shape) filled with ``value``, ``like``'s dtype."""
        filled = self.op("ConstantOfShape", [shape], f"{name}_f32",
                         value=onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [value]))
        return self.op("CastLike", [filled, like], name)

    def cast64(self, x: gs.Tensor, name: str) -> gs.Tensor:
        return self.op("Cast", [x], name, dtype=np.int64, to=INT64)

    def column(self, x: gs.Tensor, index: int, name: str) -> gs.Tensor:
        """Column ``index`` of a 2-D tensor, as 1-D."""
        return self.op("Gather", [x, self.i64(f"{name}_at", index)], name, axis=1)

    def rows(self, x: gs.Tensor, name: str) -> gs.Tensor:
        """[1] int64: the number of rows of ``x``."""
        return self.op("Shape", [x], name, dtype=np.int64, start=0, end=1)

    # ------------------------------------------------------------ the Builder (build.builder)
    # Names are taken as given (already under the conv's stem), so the node and tensor names of
    # every lowering stay what they always were: ``conv5/in_split.0``.

    def shape(self, x: gs.Tensor) -> list | None:
        return None if x.shape is None else list(x.shape)

    def variable(self, name: str, like: gs.Tensor, shape=None) -> gs.Variable:
        return gs.Variable(self.fresh(name), dtype=like.dtype, shape=shape)

    def int64s(self, name: str, values) -> gs.Constant:
        return gs.Constant(self.fresh(name), np.asarray(values, dtype=np.int64))

    def node(self, op_type: str, name: str, attrs: dict, inputs: list, outputs: list) -> None:
        """A node exactly as given (``name`` already unique)."""
        self.nodes.append(gs.Node(op_type, name, attrs, list(inputs), list(outputs)))

    def conv(self, site, inputs: list, name: str, attrs: dict, out: gs.Tensor | None = None,
             shape: list | None = None, op_type: str | None = None) -> gs.Tensor:
        """The site's op (Conv or ConvTranspose; ``op_type`` when given) on ``inputs`` with
        ``attrs``; ``name`` must be unique already (``fresh``). The output's shape is ``shape``,
        else what the input's shape and the attributes give."""
        if out is None:
            if shape is None and (op_type or site.spec.op_type) == "Conv":
                rank = len(attrs.get("kernel_shape", inputs[1].shape[2:]))
                shape = conv_output_shape(inputs[0], inputs[1].shape[0],
                                          attrs.get("kernel_shape", list(inputs[1].shape[2:])),
                                          attrs.get("strides", [1] * rank),
                                          attrs.get("dilations", [1] * rank),
                                          attrs.get("pads", [0] * (2 * rank)))
            dtype = np.int32 if (op_type or site.spec.op_type) == "ConvInteger" else site.y.dtype
            out = gs.Variable(self.fresh(f"{name}.out"), dtype=dtype, shape=shape)
        self.nodes.append(gs.Node(op_type or site.spec.op_type, name, attrs, list(inputs), [out]))
        return out

    def weight(self, weight, index: tuple, stem: str) -> gs.Tensor:
        """``weight[index]`` as a tensor (dequantized like the original when QDQ)."""
        tensor, nodes = weight.slice(stem, index)
        self.nodes.extend(nodes)
        return tensor

    def bias(self, site, start: int, stop: int, stem: str) -> gs.Tensor:
        """The site's bias for output channels [start, stop): itself when that is all of them,
        else a slice (in the graph when the bias is computed)."""
        if start == 0 and stop == site.spec.out_channels:
            return site.bias
        return self._rows(site.bias, start, stop, f"{stem}.b", f"{stem}/bias_slice")

    def weight_taps(self, weight, stems: list, use_split: bool) -> list:
        """``W[:, :, t]`` for every tap t of the first kernel axis, one per stem: constants, or
        cut in the graph (``RuntimeWeight.kernel_taps``: by one Split with ``use_split``)."""
        taps = weight.kernel_taps(stems, use_split)
        for _, nodes in taps:
            self.nodes.extend(nodes)
        return [tensor for tensor, _ in taps]

    def bias_column(self, site, stem: str) -> gs.Tensor:
        """The site's bias as [C, 1, ...], to add after a conv that ran without it: a constant
        where it is one, else a Reshape of it."""
        shape = [site.spec.out_channels, *[1] * site.spec.rank]
        value = constant_value(site.bias)
        if value is not None:
            return gs.Constant(self.fresh(f"{stem}.column"), np.asarray(value).reshape(shape))
        shaped = self.variable(f"{stem}.out", site.bias, shape)
        self.node("Reshape", self.fresh(f"{stem}_shape"), {},
                  [site.bias, self.int64s(f"{stem}_shape.shape", shape)], [shaped])
        return shaped

    def add(self, x: gs.Tensor, y: gs.Tensor, name: str,
            out: gs.Tensor | None = None) -> gs.Tensor:
        """``x + y`` (broadcast); ``name`` must be unique already (``fresh``)."""
        out = out if out is not None else self.variable(f"{name}.out", x, x.shape)
        self.node("Add", name, {}, [x, y], [out])
        return out

    def _rows(self, tensor: gs.Tensor, start: int, stop: int, name: str,
              slice_name: str) -> gs.Tensor:
        """Entries [start, stop) of a 1-D tensor: a constant slice, or a Slice node."""
        values = constant_value(tensor)
        if values is None:
            out = gs.Variable(name, dtype=tensor.dtype, shape=[stop - start])
            consts = [gs.Constant(f"{name}_{k}", np.array([v], dtype=np.int64))
                      for k, v in (("starts", start), ("ends", stop), ("axes", 0))]
            self.nodes.append(gs.Node("Slice", slice_name, {}, [tensor, *consts], [out]))
            return out
        return gs.Constant(name, np.ascontiguousarray(values[start:stop]))

    def channel_param(self, param: gs.Tensor, start: int, stop: int, name: str) -> gs.Tensor:
        """An integer conv's per-output-channel scale or zero point for channels [start, stop):
        itself when per-tensor (one value, shared by every chunk) or when all are wanted."""
        values = constant_value(param)
        if values is not None and values.size <= 1 or param.shape is not None \
                and list(param.shape) == [stop - start] and start == 0:
            return param
        return self._rows(param, start, stop, self.fresh(name), self.fresh(f"{name}/slice"))

    def uniform_param(self, param: gs.Tensor, name: str) -> gs.Tensor:
        """A per-channel parameter whose entries are all equal, as one scalar (ConvInteger takes
        one weight zero point)."""
        values = constant_value(param)
        if values is None or values.size == 0 or np.any(values != values.ravel()[0]):
            raise Declined(f"{param.name} is not one constant value")
        if values.ndim == 0:
            return param
        return gs.Constant(self.fresh(name), np.array(values.ravel()[0], dtype=values.dtype))

    def requantize(self, acc: gs.Tensor, site, start: int, stop: int, stem: str,
                   out: gs.Tensor | None = None) -> gs.Tensor:
        """A QLinearConv's int32 accumulator for output channels [start, stop) to its output,
        the way onnxruntime's kernel does it: plus the bias (int32), to float32, times
        x_scale * w_scale / y_scale (float32, multiplied then divided), rounded half to even,
        plus y_zero_point, saturated (QuantizeLinear with scale 1). Measured bit-exact against
        onnxruntime's QLinearConv (benchmarks/integer_split_exactness.py)."""
        q = {role: constant_value(t) for role, t in site.quant.items()}
        if any(q.get(r) is None for r in ("x_scale", "w_scale", "y_scale", "y_zero_point")):
            raise Declined("requantizing needs constant scales and output zero point")
        per_channel = [-1] + [1] * site.spec.rank
        w_scale = q["w_scale"].astype(np.float32).ravel()
        if w_scale.size > 1:
            w_scale = w_scale[start:stop].reshape(per_channel)
        else:
            w_scale = w_scale.reshape(())
        multiplier = (np.float32(q["x_scale"]) * w_scale) / np.float32(q["y_scale"])
        if site.bias is not None:
            bias = constant_value(site.bias)
            if bias is None:
                raise Declined("requantizing needs a constant bias")
            bias = gs.Constant(self.fresh(f"{stem}.bias"), np.ascontiguousarray(
                bias[start:stop].astype(np.int32).reshape(per_channel)))
            acc = self._op1("Add", [acc, bias], f"{stem}.add_bias", np.int32, acc.shape)
        real = self._op1("Cast", [acc], f"{stem}.to_float", np.float32, acc.shape,
                         to=onnx.TensorProto.FLOAT)
        scaled = self._op1("Mul", [real, gs.Constant(self.fresh(f"{stem}.multiplier"),
                                                     np.asarray(multiplier, np.float32))],
                           f"{stem}.scale", np.float32, acc.shape)
        one = gs.Constant(self.fresh(f"{stem}.one"), np.array(1.0, np.float32))
        result = out if out is not None else \
            gs.Variable(self.fresh(f"{stem}.out"), dtype=site.y.dtype, shape=acc.shape)
        self.nodes.append(gs.Node("QuantizeLinear", self.fresh(stem), {},
                                  [scaled, one, site.quant["y_zero_point"]], [result]))
        return result

    def weight_zero_points(self, site) -> np.ndarray:
        """An integer conv's weight zero point per output channel: what an empty tap holds."""
        return zero_points_of(site.quant, site.name, site.spec)

    def conv_integer_centred(self, site, x, w: gs.Constant, start: int, stop: int, stem: str,
                             attrs: dict, shape=None) -> gs.Tensor:
        """int32 sums over ``x``'s channels of (x - x_zp) * (w - w_zp[c]) for output channels
        [start, stop) whose weight zero points differ (ConvInteger takes one):
        ConvInteger(x, w, x_zp, 0) - w_zp[c] * ConvInteger(x, ones, x_zp, 0), the second a
        one-channel sum of the window's centred inputs. Integer arithmetic: exact."""
        zero_points = constant_value(site.quant["w_zero_point"])
        if zero_points is None:
            raise Declined("per-channel weight zero points must be constants to centre")
        dtype, x_zp = zero_points.dtype, site.quant["x_zero_point"]
        zero = gs.Constant(self.fresh(f"{stem}.w_zero"), np.array(0, dtype))
        acc = self.conv(site, [x, w, x_zp, zero], stem, attrs, shape=shape, op_type="ConvInteger")
        ones = gs.Constant(self.fresh(f"{stem}.ones"), np.ones((1, *w.shape[1:]), dtype))
        one_shape = None if shape is None else [shape[0], 1, *shape[2:]]
        window = self.conv(site, [x, ones, x_zp, zero], self.fresh(f"{stem}.window_sum"), attrs,
                           shape=one_shape, op_type="ConvInteger")
        rows = zero_points.ravel()[start:stop].astype(np.int32).reshape(-1, *[1] * site.spec.rank)
        term = self._op1("Mul", [window, gs.Constant(self.fresh(f"{stem}.w_zero_points"), rows)],
                         f"{stem}.zero_point_term", np.int32, shape)
        return self._op1("Sub", [acc, term], f"{stem}.centred", np.int32, shape)

    def _op1(self, op_type: str, inputs: list, name: str, dtype, shape, **attrs) -> gs.Variable:
        result = gs.Variable(self.fresh(f"{name}.out"), dtype=dtype, shape=shape)
        self.nodes.append(gs.Node(op_type, self.fresh(name), attrs, list(inputs), [result]))
        return result

    def sum(self, terms: list, accumulate: str, stem: str, out: gs.Tensor | None = None):
        """Add partial results in ``accumulate`` order (chain or tree); the last Add writes
        ``out`` when given. Chains are marked regroupable for sum fusion."""
        if len(terms) == 1:
            return terms[0]
        operands = list(terms)
        pairs = sum_order(len(terms), accumulate)
        for k, (i, j) in enumerate(pairs):
            name = self.fresh(f"{stem}.{k}")
            last = k == len(pairs) - 1
            result = out if last and out is not None else \
                self.variable(f"{name}.out", terms[0], terms[0].shape)
            self.nodes.append(gs.Node("Add", name, {}, [operands[i], operands[j]], [result]))
            if accumulate == "chain":
                self.regroupable.add(name)
            operands.append(result)
        return operands[-1]

    def concat(self, xs: list, axis: int, name: str, out: gs.Tensor | None = None,
               shape: list | None = None) -> gs.Tensor:
        out = out if out is not None else self.variable(f"{name}.out", xs[0], shape)
        self.nodes.append(gs.Node("Concat", self.fresh(name), {"axis": axis}, list(xs), [out]))
        return out

    def split_channels(self, x: gs.Tensor, ranges: list, stem: str, use_split: bool,
                       slice_stem: str) -> list:
        """``x`` cut into the channel ``ranges`` (``split_axis`` on axis 1)."""
        return self.split_axis(x, 1, ranges, stem, use_split, slice_stem)

    def split_axis(self, x: gs.Tensor, axis: int, ranges: list, stem: str, use_split: bool,
                   slice_stem: str) -> list:
        """``x`` cut into the ``ranges`` (which partition it) of ``axis``: one Split named
        ``stem``, or one Slice per range named ``{slice_stem}.{i}``; the chunks are
        ``{stem}.{i}``."""
        chunks = []
        for i, (a, b) in enumerate(ranges):
            shape = None
            if x.shape is not None:
                shape = list(x.shape)
                shape[axis] = b - a
            chunks.append(gs.Variable(self.fresh(f"{stem}.{i}"), dtype=x.dtype, shape=shape))
        if use_split:
            sizes = np.array([b - a for a, b in ranges], dtype=np.int64)
            attrs, inputs = {"axis": axis}, [x]
            if self.opset >= 13:
                inputs.append(gs.Constant(self.fresh(f"{stem}.sizes"), sizes))
            else:
                attrs["split"] = [int(s) for s in sizes]
            self.nodes.append(gs.Node("Split", self.fresh(stem), attrs, inputs, chunks))
            return chunks
        for i, (a, b) in enumerate(ranges):
            consts = [gs.Constant(self.fresh(f"{slice_stem}.{i}.{k}"),
                                  np.array([v], dtype=np.int64))
                      for k, v in (("starts", a), ("ends", b), ("axes", axis))]
            self.nodes.append(gs.Node("Slice", self.fresh(f"{slice_stem}.{i}"), {},
                                      [x, *consts], [chunks[i]]))
        return chunks

    def slice_axes(self, x: gs.Tensor, axes: list, starts: list, ends: list, steps: list,
                   stem: str, out: gs.Tensor | None = None) -> gs.Tensor:
        """Slice ``axes`` of ``x``; ends may be negative or INT64_MAX (attributes before
        opset 10, inputs from it on)."""
        shape = None
        if x.shape is not None and all(a < len(x.shape) for a in axes):
            shape = list(x.shape)
            for a, start, end, step in zip(axes, starts, ends, steps):
                shape[a] = sliced_extent(shape[a], start, end, step)
        result = out if out is not None else self.variable(f"{stem}.out", x, shape)
        if self.opset < 10:
            if any(step != 1 for step in steps):
                raise ValueError("Slice before opset 10 takes no steps")
            self.node("Slice", self.fresh(stem), {"starts": list(starts), "ends": list(ends),
                                                  "axes": list(axes)}, [x], [result])
            return result
        inputs = [x, self.int64s(f"{stem}.starts", starts), self.int64s(f"{stem}.ends", ends),
                  self.int64s(f"{stem}.axes", axes), self.int64s(f"{stem}.steps", steps)]
        self.node("Slice", self.fresh(stem), {}, inputs, [result])
        return result

    def pad_spatial(self, x: gs.Tensor, begins: list, ends: list, stem: str,
                    out: gs.Tensor | None = None, value: gs.Tensor | None = None) -> gs.Tensor:
        """Pad the axes after the first two with zeros, or with ``value`` (an integer conv's
        input zero point: its real zero, what the conv itself pads with); ``x`` itself when there
        is nothing to pad."""
        if not any(begins) and not any(ends):
            return x
        fill = self.pad_fill(value, stem)
        pads = [0, 0, *begins, 0, 0, *ends]
        shape, full = None, len(pads) // 2
        if x.shape is not None and len(x.shape) == full:
            shape = [e + pads[i] + pads[i + full] if isinstance(e, int) else None
                     for i, e in enumerate(x.shape)]
        result = out if out is not None else self.variable(f"{stem}.out", x, shape)
        if self.opset >= 11:
            self.node("Pad", self.fresh(stem), {"mode": "constant"},
                      [x, self.int64s(f"{stem}.pads", pads)] + ([fill] if fill is not None else []),
                      [result])
        elif fill is not None:
            raise Declined("padding with a zero point needs opset 11 (Pad's constant_value)")
        else:
            self.node("Pad", self.fresh(stem), {"mode": "constant", "pads": pads}, [x], [result])
        return result

    def pad_fill(self, value: gs.Tensor | None, stem: str) -> gs.Constant | None:
        """``value`` as Pad's scalar constant_value: None for an absent (or unnamed optional)
        zero point or one that is 0 (Pad's default); a one-element constant as a scalar."""
        if value is None or not value.name:
            return None
        values = constant_value(value)
        if values is None or values.size != 1:
            raise Declined(f"padding with the input zero point {value.name!r} needs it as one "
                           "constant value")
        if not values.any():
            return None
        if isinstance(value, gs.Constant) and values.ndim == 0:
            return value
        return gs.Constant(self.fresh(f"{stem}.value"), values.reshape(()))

    def reshape(self, x: gs.Tensor, shape: list, name: str, shape_name: str,
                out: gs.Tensor | None = None) -> gs.Tensor:
        """``x`` reshaped to ``shape`` (static extents, one -1 at most; a 0 keeps the input's
        extent)."""
        if out is None:
            known = None
            if x.shape is not None and all(isinstance(d, int) for d in x.shape):
                copied = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
                total, rest = int(np.prod(x.shape)), int(np.prod([d for d in copied if d != -1]))
                known = [total // rest if d == -1 else d for d in copied]
            out = self.variable(f"{name}.out", x, known)
        if self.opset < 5:
            raise ValueError("Reshape before opset 5 takes its shape as an attribute")
        self.node("Reshape", self.fresh(name), {}, [x, self.int64s(shape_name, shape)], [out])
        return out

    def transpose(self, x: gs.Tensor, perm: list, name: str,
                  out: gs.Tensor | None = None) -> gs.Tensor:
        """``x`` with its axes in the order ``perm``."""
        if out is None:
            known = [x.shape[p] for p in perm] if x.shape is not None else None
            out = self.variable(f"{name}.out", x, known)
        self.node("Transpose", self.fresh(name), {"perm": list(perm)}, [x], [out])
        return out

    def take_channels(self, x: gs.Tensor, source: np.ndarray, channels: int, rank: int,
                      use_gather: bool, stem: str, out_stem: str) -> gs.Tensor:
        """Channel ``source[j]`` of ``x`` as channel j (repeats allowed), into a tensor named
        ``out_stem``: one Gather on axis 1, or (a target without Gather) a 1x1 conv whose
        one-hot weight has a single 1 per row."""
        shape = None if x.shape is None else [x.shape[0], len(source), *x.shape[2:]]
        out = self.variable(out_stem, x, shape)
        name = self.fresh(stem)
        if use_gather:
            self.node("Gather", name, {"axis": 1}, [x, gs.Constant(f"{name}.indices", source)],
                      [out])
            return out
        dtype = np.dtype(x.dtype) if x.dtype is not None else np.float32
        self.node("Conv", name, {"kernel_shape": [1] * rank},
                  [x, gs.Constant(f"{name}.w", selection_weight(source, channels, rank, dtype))],
                  [out])
        return out

    def depth_to_space(self, x: gs.Tensor, blocksize: int, name: str,
                       out: gs.Tensor | None = None) -> gs.Tensor:
        """DepthToSpace (DCR): channel block ``(i * b + j) * C + c`` to pixel offset (i, j)."""
        out = out if out is not None else self.variable(f"{name}.out", x)
        self.node("DepthToSpace", self.fresh(name), {"blocksize": blocksize, "mode": "DCR"},
                  [x], [out])
        return out

    def space_to_depth(self, x: gs.Tensor, blocksize: int, name: str,
                       out: gs.Tensor | None = None) -> gs.Tensor:
        """SpaceToDepth: pixel offset (i, j) of each block to channel block ``i * b + j``."""
        out = out if out is not None else self.variable(f"{name}.out", x)
        self.node("SpaceToDepth", self.fresh(name), {"blocksize": blocksize}, [x], [out])
        return out
