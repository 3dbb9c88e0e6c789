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

from ..conv import dims_text
from ..errors import BadInputError

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
