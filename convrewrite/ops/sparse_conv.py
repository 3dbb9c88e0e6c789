"""The ``SparseConv`` op: a convolution over the active sites of a sparse 2-D or 3-D grid.

Schema (domain ``ai.convrewrite``, version 1)::

  SparseConv(features, coordinates, W, B?) -> (out_features, out_coordinates)

  inputs
    features      [N, Cin]         float16 / float32 / float64: one row per active input site
    coordinates   [N, 1 + D]       int32 or int64: column 0 the batch index, then the D = 2 or 3
                                   spatial coordinates, in the order of ``spatial_shape``
                                   (spconv's ``indices``); every row a different site
    W             [Cout, Cin, k_1, ..., k_D]   ONNX Conv's layout (spconv keeps [Cout, k..., Cin]:
                                   ``onnx_weight_from_spconv`` converts)
    B             [Cout], optional
  outputs
    out_features     [M, Cout]     features' dtype
    out_coordinates  [M, 1 + D]    coordinates' dtype
  attributes
    kernel_shape   ints [D], required (W's spatial extents)
    spatial_shape  ints [D], required: the input grid; 0 <= coordinate < spatial_shape
    strides        ints [D], default 1
    pads           ints [2D], ONNX order (all begins, then all ends), default 0
    dilations      ints [D], default 1
    submanifold    int, 0 (regular, default) or 1 (submanifold)

Semantics: a cross-correlation, like ONNX Conv and spconv, over a grid that is zero off the active
sites. With p the begin pads, for every output site o (batch b)::

    out[o] = B + sum over taps k of  W[:, :, k] @ in[b, o * s - p + k * d]    (0 where not active)

Taps k run over the kernel window in row-major order (last spatial dim fastest), as spconv's.

* regular (``submanifold=0``): the output grid is ``O = (S + p_begin + p_end - d(k-1) - 1) // s + 1``
  per dim, and the output sites are every site of it (per batch index) that some tap reaches from
  an active input site -- the active set dilates. Output order: ascending (batch, then the
  spatial coordinates in order), i.e. the row-major order of the dense output.
* submanifold (``submanifold=1``): stride 1, odd kernels, pads ``(k // 2) * d`` on each side (the
  attribute may be omitted; other values are an error); the output sites are the input sites, in
  the input's order (row i of the output is row i of the input), so sparsity is preserved.

The inverse conv (spconv's ``SparseInverseConv``; domain ``ai.convrewrite``, version 1)::

  SparseInverseConv(features, coordinates, out_coordinates, W, B?) -> out_features

  inputs
    features         [M, Cin]      one row per coarse site
    coordinates      [M, 1 + D]    the coarse sites, on the strided conv's output grid
                                   (``out_spatial_shape`` of the attributes below)
    out_coordinates  [N, 1 + D]    the fine sites to compute, on ``spatial_shape`` (typically the
                                   input sites of the strided conv it inverts, saved by the encoder)
    W                [Cout, Cin, k_1, ..., k_D]
    B                [Cout], optional
  outputs
    out_features     [N, Cout]     row i for out_coordinates row i
  attributes: those of the strided (regular) SparseConv it inverts: kernel_shape, spatial_shape
    (the fine grid), strides, pads, dilations; no submanifold.

  out[x] = B + sum over (o, k) with o * s - p + k * d = x, o a coarse site, of W[:, :, k] @ in[o]

That is ONNX's ConvTranspose (weight [Cin, Cout, k...] = W with its first two axes swapped) on the
coarse grid, sampled at the fine sites; its rulebook is the strided conv's, read backwards.

spconv 2.x (SparseConvNd / SubMConvNd) computes the same values on the same site sets; where they
differ: spconv's regular conv lists output sites in first-seen order (kernel tap outer, input row
inner) where we sort them, so compare results keyed by coordinate; spconv has one symmetric
padding per dim where we take ONNX's begin/end pads; spconv takes ``batch_size`` as an argument
where the batch indices here are whatever the coordinates hold (the dense reference uses
max + 1); spconv's CPU scatter-add races on more than one OpenMP thread, ours is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx import OnnxBuilder
from ..conv import dims_text
from ..errors import BadInputError
from . import register_reference

OP_TYPE = "SparseConv"
INVERSE_OP_TYPE = "SparseInverseConv"
SPATIAL_RANKS = (2, 3)
COORD_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
FEATURE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


class SparseConvError(BadInputError):
    """A SparseConv's attributes or inputs cannot be used (bad coordinates, shapes, dtypes)."""


def _ints(name: str, value, length: int, minimum: int) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise SparseConvError(f"SparseConv {name}: expected a list of integers, got {value!r}") \
            from None
    if len(values) != length:
        raise SparseConvError(f"SparseConv {name}: expected {length} values, got {list(values)}")
    if any(v < minimum for v in values):
        raise SparseConvError(f"SparseConv {name}: every value must be >= {minimum}, got "
                              f"{list(values)}")
    return values


@dataclass(frozen=True)
class SparseConvAttrs:
    """The validated attributes of one SparseConv."""

    kernel_shape: tuple[int, ...]
    spatial_shape: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]              # begins then ends
    dilations: tuple[int, ...]
    submanifold: bool

    @classmethod
    def create(cls, kernel_shape, spatial_shape, strides=None, pads=None, dilations=None,
               submanifold: bool = False) -> "SparseConvAttrs":
        if kernel_shape is None or spatial_shape is None:
            raise SparseConvError("SparseConv needs the kernel_shape and spatial_shape attributes")
        rank = len(list(kernel_shape))
        if rank not in SPATIAL_RANKS:
            raise SparseConvError(f"SparseConv kernel_shape: 2 or 3 spatial dims, got "
                                  f"{list(kernel_shape)}")
        kernel = _ints("kernel_shape", kernel_shape, rank, 1)
        spatial = _ints("spatial_shape", spatial_shape, rank, 1)
        strides = _ints("strides", strides if strides is not None else [1] * rank, rank, 1)
        dilations = _ints("dilations", dilations if dilations is not None else [1] * rank, rank, 1)
        if submanifold not in (0, 1, True, False):
            raise SparseConvError(f"SparseConv submanifold: expected 0 or 1, got {submanifold!r}")
        if submanifold:
            if any(s != 1 for s in strides):
                raise SparseConvError(f"submanifold SparseConv needs stride 1, got {list(strides)}")
            if any(k % 2 == 0 for k in kernel):
                raise SparseConvError(f"submanifold SparseConv needs odd kernels (as spconv), got "
                                      f"{list(kernel)}")
            same = tuple((k // 2) * d for k, d in zip(kernel, dilations)) * 2
            if pads is not None and _ints("pads", pads, 2 * rank, 0) != same:
                raise SparseConvError(f"submanifold SparseConv pads must be {list(same)} (the kernel "
                                      f"centred on each site) or omitted, got {list(pads)}")
            pads = same
        else:
            pads = _ints("pads", pads if pads is not None else [0] * (2 * rank), 2 * rank, 0)
        attrs = cls(kernel, spatial, strides, tuple(pads), dilations, bool(submanifold))
        if any(o < 1 for o in attrs.out_spatial_shape):
            raise SparseConvError(f"SparseConv output grid {list(attrs.out_spatial_shape)} is empty "
                                  f"(spatial_shape {list(spatial)}, kernel {list(kernel)})")
        return attrs

    @classmethod
    def from_node_attrs(cls, attrs: dict, op_type: str = OP_TYPE) -> "SparseConvAttrs":
        known = {"kernel_shape", "spatial_shape", "strides", "pads", "dilations"}
        if op_type == OP_TYPE:
            known.add("submanifold")
        unknown = sorted(set(attrs) - known)
        if unknown:
            raise SparseConvError(f"{op_type}: unknown attribute {unknown[0]!r} "
                                  f"(known: {', '.join(sorted(known))})")
        return cls.create(attrs.get("kernel_shape"), attrs.get("spatial_shape"),
                          attrs.get("strides"), attrs.get("pads"), attrs.get("dilations"),
                          int(attrs.get("submanifold", 0)))

    def to_node_attrs(self, op_type: str = OP_TYPE) -> dict:
        out = {"kernel_shape": list(self.kernel_shape), "spatial_shape": list(self.spatial_shape),
               "strides": list(self.strides), "pads": list(self.pads),
               "dilations": list(self.dilations)}
        if op_type == OP_TYPE:
            out["submanifold"] = int(self.submanifold)
        return out

    @property
    def rank(self) -> int:
        return len(self.kernel_shape)

    @property
    def kernel_volume(self) -> int:
        return prod(self.kernel_shape)

    @property
    def pads_begin(self) -> tuple[int, ...]:
        return self.pads[:self.rank]

    @property
    def out_spatial_shape(self) -> tuple[int, ...]:
        if self.submanifold:
            return self.spatial_shape
        r = self.rank
        return tuple((s + self.pads[i] + self.pads[r + i] - d * (k - 1) - 1) // st + 1
                     for i, (s, k, st, d) in enumerate(zip(self.spatial_shape, self.kernel_shape,
                                                           self.strides, self.dilations)))

    @property
    def centre_tap(self) -> int | None:
        """The tap that maps every site onto itself (submanifold only)."""
        return self.kernel_volume // 2 if self.submanifold else None

    def taps(self) -> np.ndarray:
        """[K, D] tap indices, row-major (last dim fastest)."""
        grids = np.meshgrid(*[np.arange(k) for k in self.kernel_shape], indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)

    def describe(self, inverse: bool = False) -> str:
        kind = "inverse" if inverse else "submanifold" if self.submanifold else "regular"
        k = dims_text(self.kernel_shape)
        extra = "".join(f" {name} {list(v)}" for name, v, plain in (
            ("stride", self.strides, 1), ("dilation", self.dilations, 1))
            if any(x != plain for x in v))
        if not self.submanifold and any(self.pads):
            extra += f" pads {list(self.pads)}"
        return f"{kind} {k}{extra} on {dims_text(self.spatial_shape)}"


def check_weight(weight: np.ndarray, attrs: SparseConvAttrs, in_channels: int | None = None) -> None:
    w = np.asarray(weight)
    if w.ndim != 2 + attrs.rank or tuple(w.shape[2:]) != attrs.kernel_shape:
        kernel = ", ".join(map(str, attrs.kernel_shape))
        raise SparseConvError(f"SparseConv W: expected [Cout, Cin, {kernel}], got {list(w.shape)}")
    if in_channels is not None and w.shape[1] != in_channels:
        raise SparseConvError(f"SparseConv W has {w.shape[1]} input channels, the features "
                              f"{in_channels}")


def check_features(features: np.ndarray, num_sites: int) -> None:
    f = np.asarray(features)
    if f.dtype not in FEATURE_DTYPES:
        raise SparseConvError(f"SparseConv features must be float16, float32 or float64, got "
                              f"{f.dtype}")
    if f.ndim != 2 or f.shape[0] != num_sites:
        raise SparseConvError(f"SparseConv features: expected [{num_sites}, Cin] (one row per "
                              f"coordinate row), got {list(f.shape)}")


def tap_weights(weight: np.ndarray) -> np.ndarray:
    """ONNX [Cout, Cin, k...] -> [K, Cin, Cout], tap k's matrix in the row-major tap order."""
    w = np.asarray(weight)
    return np.ascontiguousarray(w.reshape(w.shape[0], w.shape[1], -1).transpose(2, 1, 0))


def onnx_weight_from_spconv(weight: np.ndarray) -> np.ndarray:
    """spconv 2.x's [Cout, k..., Cin] weight -> ONNX's [Cout, Cin, k...]."""
    w = np.asarray(weight)
    return np.ascontiguousarray(np.moveaxis(w, -1, 1))


def spconv_weight_from_onnx(weight: np.ndarray) -> np.ndarray:
    """ONNX's [Cout, Cin, k...] -> spconv 2.x's [Cout, k..., Cin]."""
    w = np.asarray(weight)
    return np.ascontiguousarray(np.moveaxis(w, 1, -1))


# ---------------------------------------------------------------- reading nodes

def optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    if len(node.inputs) > index and node.inputs[index].name:
        return node.inputs[index]
    return None



def node_attrs(node: gs.Node) -> SparseConvAttrs:
    """The attributes of a SparseConv or SparseInverseConv node, validated."""
    try:
        return SparseConvAttrs.from_node_attrs(node.attrs, node.op)
    except SparseConvError as exc:
        raise SparseConvError(f"{node.op} {node.name!r}: {exc}") from None


# ---------------------------------------------------------------- the reference

def _scatter_dense(e: OnnxBuilder, features, c64, batches, grid_name: str, grid: list,
                   rank: int):
    """The sites' features scattered onto a zero [batches, *grid, C] tensor, as [N, C, *grid]:
    the dense tensor the literal (reference) forms convolve; also the grid's shape constant."""
    channels = e.op("Shape", [features], "channels", start=1, end=2)
    grid = e.i64(grid_name, grid)
    zeros = e.zeros(e.op("Concat", [batches, grid, channels], "dense_shape", axis=0), features,
                    "dense_zeros")
    scattered = e.op("ScatterND", [zeros, c64, features], "scatter")
    return e.op("Transpose", [scattered], "to_nc", perm=[0, rank + 1, *range(1, rank + 1)]), grid


def reference_nodes(features: gs.Tensor, coords: gs.Tensor, weight: gs.Tensor,
                    bias: gs.Tensor | None, attrs: SparseConvAttrs, out_features: gs.Tensor,
                    out_coords: gs.Tensor | None, e: OnnxBuilder) -> list[gs.Node]:
    rank = attrs.rank
    c64 = e.cast64(coords, "coords64")
    batch = e.column(c64, 0, "batch")
    top = e.op("ReduceMax", [e.op("Concat", [batch, e.i64("zero", [0])], "batch_or_0", axis=0)],
               "batch_max", keepdims=1)
    batches = e.op("Add", [top, e.i64("one", [1])], "batches")
    dense, grid = _scatter_dense(e, features, c64, batches, "grid", attrs.spatial_shape, rank)
    conv_attrs = {"kernel_shape": list(attrs.kernel_shape), "strides": list(attrs.strides),
                  "pads": list(attrs.pads), "dilations": list(attrs.dilations)}
    y = e.op("Conv", [dense, weight, *([bias] if bias is not None else [])], "dense_conv",
             **conv_attrs)
    y_last = e.op("Transpose", [y], "to_channels_last", perm=[0, *range(2, rank + 2), 1])
    if attrs.submanifold:
        sites = c64
        if out_coords is not None:
            e.op("Identity", [coords], "out_coords", out=out_coords)
    else:
        one = onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [1.0])
        ones = e.op("ConstantOfShape", [e.op("Concat", [e.rows(coords, "n"), e.i64("c1", [1])],
                                             "ones_shape", axis=0)], "ones", value=one)
        occ_zeros = e.op("ConstantOfShape", [e.op("Concat", [batches, grid, e.i64("c1b", [1])],
                                                  "occ_shape", axis=0)], "occ_zeros")
        occ = e.op("ScatterND", [occ_zeros, c64, ones], "occupancy")
        occ = e.op("Transpose", [occ], "occ_nc", perm=[0, rank + 1, *range(1, rank + 1)])
        kernel = e.const("ones_kernel", np.ones((1, 1, *attrs.kernel_shape), np.float32))
        reach = e.op("Conv", [occ, kernel], "reach", **conv_attrs)
        active = e.op("Greater", [e.op("Squeeze", [reach, e.i64("axis1", [1])], "reach_sites"),
                                  e.const("half", np.float32(0.5))], "reached")
        sites = e.op("Transpose", [e.op("NonZero", [active], "sites_t")], "sites", perm=[1, 0])
        if out_coords is not None:
            e.op("CastLike", [sites, coords], "out_coords", out=out_coords)
    e.op("GatherND", [y_last, sites], "sample", out=out_features)
    return e.nodes


@register_reference(OP_TYPE)
def node_reference(node: gs.Node, names) -> list[gs.Node]:
    """The dense Conv on the scattered grid, sampled at the sites, in place of one SparseConv."""
    if len(node.inputs) < 3:
        raise SparseConvError(f"SparseConv {node.name!r}: needs features, coordinates and W")
    out_coords = node.outputs[1] if len(node.outputs) > 1 and node.outputs[1].name else None
    return reference_nodes(node.inputs[0], node.inputs[1], node.inputs[2], optional_input(node, 3),
                           node_attrs(node), node.outputs[0], out_coords,
                           OnnxBuilder(names, f"{node.name}/reference"))


def inverse_reference_nodes(features: gs.Tensor, coords: gs.Tensor, out_coords: gs.Tensor,
                            weight: gs.Tensor, bias: gs.Tensor | None, attrs: SparseConvAttrs,
                            out_features: gs.Tensor, e: OnnxBuilder) -> list[gs.Node]:
    """SparseInverseConv literally: the coarse features scattered onto the strided conv's output
    grid, ONNX's ConvTranspose (W's first two axes swapped) back onto the fine grid, sampled at
    the given fine sites."""
    rank = attrs.rank
    c64, f64 = e.cast64(coords, "coords64"), e.cast64(out_coords, "out_coords64")
    both = e.op("Concat", [e.column(c64, 0, "batch"), e.column(f64, 0, "out_batch"),
                           e.i64("zero", [0])], "batches_or_0", axis=0)
    batches = e.op("Add", [e.op("ReduceMax", [both], "batch_max", keepdims=1), e.i64("one", [1])],
                   "batches")
    dense, _ = _scatter_dense(e, features, c64, batches, "coarse_grid",
                              attrs.out_spatial_shape, rank)
    w_t = e.op("Transpose", [weight], "w_in_out", perm=[1, 0, *range(2, rank + 2)])
    y = e.op("ConvTranspose", [dense, w_t], "dense_conv_transpose",
             kernel_shape=list(attrs.kernel_shape), strides=list(attrs.strides),
             dilations=list(attrs.dilations), pads=[*attrs.pads_begin, *([0] * rank)])
    made = [(o - 1) * s - p + d * (k - 1) + 1 for o, s, p, d, k in zip(
        attrs.out_spatial_shape, attrs.strides, attrs.pads_begin, attrs.dilations,
        attrs.kernel_shape)]
    want = list(attrs.spatial_shape)
    if any(m > w for m, w in zip(made, want)):      # the window reaches past the fine grid
        y = e.op("Slice", [y, e.i64("crop_start", [0] * rank), e.i64("crop_end", want),
                           e.i64("crop_axes", list(range(2, rank + 2)))], "crop")
    if any(m < w for m, w in zip(made, want)):      # fine sites no window reaches get 0 (+ B)
        grow = [max(0, w - m) for m, w in zip(made, want)]
        y = e.op("Pad", [y, e.i64("grow", [0, 0, *([0] * rank), 0, 0, *grow])], "grow")
    y_last = e.op("Transpose", [y], "to_channels_last", perm=[0, *range(2, rank + 2), 1])
    sampled = e.op("GatherND", [y_last, f64], "sample",
                   out=None if bias is not None else out_features)
    if bias is not None:
        e.op("Add", [sampled, bias], "bias", out=out_features)
    return e.nodes


@register_reference(INVERSE_OP_TYPE)
def node_inverse_reference(node: gs.Node, names) -> list[gs.Node]:
    """The dense ConvTranspose on the coarse grid, sampled at the fine sites, in place of one
    SparseInverseConv."""
    if len(node.inputs) < 4:
        raise SparseConvError(f"{node.op} {node.name!r}: needs features, coordinates, "
                              "out_coordinates and W")
    return inverse_reference_nodes(node.inputs[0], node.inputs[1], node.inputs[2], node.inputs[3],
                                   optional_input(node, 4), node_attrs(node), node.outputs[0],
                                   OnnxBuilder(names, f"{node.name}/reference"))
