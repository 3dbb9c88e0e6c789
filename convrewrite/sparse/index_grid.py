"""In-graph rulebook lookups through a dense index grid: no sort where the grid is small.

The grid holds, for every position of the (padded) spatial grid of every batch item, the row of
the site there plus one, 0 where no site is: one ScatterElements of the site rows onto zeros.
A rulebook's neighbour lookups are then one Gather of the grid at ``key + tap offset`` (the
margins keep every query inside), and a regular conv's output sites are where a MaxPool of the
grid (the conv's kernel, stride and dilation over the padded grid) is non-zero -- NonZero lists
them in row-major order, which is the sorted-key order of the sort-based form (``onnx_form``).

Chosen by cost against the sort-based form (TopK over the sites and all their queries, measured
~240 ns per key on onnxruntime, 1 thread, against ~2-5 ns per grid entry to fill, scatter and
read; benchmarks/sparse_backbones.py): the grid costs its size whatever the density, the sort its
keys, so the grid is taken when it has at most ``GRID_LIMIT`` entries per batch item (int32: 64
MB) -- from there a sort of (1 + K/2) x N keys costs more as soon as more than ~0.1-0.3% of a
3x3x3 grid is active. Beyond the limit (a 1600x1600x40 LiDAR grid: 102M entries) the sort stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx import OnnxBuilder
from .rulebook import _row_major_strides

GRID_LIMIT = 1 << 24            # entries per batch item (int32)
NS_PER_GRID_ENTRY = 3.0         # fill + scatter + occupancy reads, onnxruntime 1 thread
NS_PER_SORTED_KEY = 240.0       # TopK (k = all) + CumSum + ScatterElements of sort_unique

GRID_OPS = frozenset({"ReduceMax", "MaxPool", "NonZero", "Transpose", "Greater", "Where",
                      "GatherElements"})


def grid_fits(extents) -> bool:
    return prod(extents) <= GRID_LIMIT


def why(extents, sorted_keys_per_site: float) -> str:
    """The choice in words, for the record."""
    volume = prod(extents)
    if not grid_fits(extents):
        return (f"sort-based lookups: a dense index grid would hold {volume} entries per batch "
                f"item (limit {GRID_LIMIT})")
    breakeven = volume * NS_PER_GRID_ENTRY / (sorted_keys_per_site * NS_PER_SORTED_KEY)
    return (f"lookups through a dense index grid of {volume} int32 entries per batch item "
            f"(est. {volume * NS_PER_GRID_ENTRY * 1e-6:.2g} ms; a sort of "
            f"{sorted_keys_per_site:g} keys per site costs more from {breakeven:.0f} sites on)")


@dataclass
class IndexGrid:
    """The grid as a graph tensor: [B * prod(extents)] int32, row + 1 (0: no site)."""

    flat: gs.Tensor
    extents: tuple[int, ...]
    strides: list[int]          # key strides: batch (prod(extents)), then row-major spatial
    batches: gs.Tensor          # [1] int64


def key_strides(extents) -> list[int]:
    strides = _row_major_strides((1, *extents))
    strides[0] = int(prod(extents))
    return strides


def site_keys(c64: gs.Tensor, margins, strides, e: OnnxBuilder, name: str) -> gs.Tensor:
    """[N] int64 keys of the sites [N, 1 + D] shifted by ``margins`` into the padded grid."""
    shifted = e.op("Add", [c64, e.i64(f"{name}.margins", [0, *margins])], f"{name}.shifted")
    return e.op("ReduceSum", [e.op("Mul", [shifted, e.i64(f"{name}.strides", strides)],
                                   f"{name}.scaled"), e.i64(f"{name}.axis1", [1])], name,
                keepdims=0)


def build_grid(c64: gs.Tensor, rows: gs.Tensor, margins, extents, e: OnnxBuilder,
               name: str = "grid", also: gs.Tensor | None = None, sort: bool = False
               ) -> tuple[IndexGrid, gs.Tensor, gs.Tensor | None]:
    """The index grid of the sites ``c64`` ([N, 1 + D] int64, rows ``rows``) placed at
    ``coordinate + margins`` in a grid of ``extents``, for as many batch items as they (and
    ``also``, sites whose queries it must answer) name; the sites' keys in it; and with ``sort``
    (sites in no known order) the rows in key order: the grid then holds each site's position
    in that order and the keys are sorted, so that the lookups of neighbouring sites read
    neighbouring memory (measured: a [61741, 27] table 37 ms in arbitrary order, 10 ms sorted,
    for a 5 ms TopK)."""
    strides = key_strides(extents)
    keys = site_keys(c64, margins, strides, e, f"{name}.keys")
    order = None
    if sort:
        keys, order = e.multi("TopK", [keys, e.op("Shape", [keys], f"{name}.n")], f"{name}.sort",
                              2, axis=0, largest=0, sorted=1)
    columns = [e.column(c64, 0, f"{name}.batch_col")]
    if also is not None:
        columns.append(e.column(also, 0, f"{name}.query_batch_col"))
    batch = e.op("Concat", [*columns, e.i64(f"{name}.none", [0])], f"{name}.batch_or_0", axis=0)
    batches = e.op("Add", [e.op("ReduceMax", [batch], f"{name}.last_batch", keepdims=1),
                           e.i64(f"{name}.one", [1])], f"{name}.batches")
    size = e.op("Mul", [batches, e.i64(f"{name}.volume", [strides[0]])], f"{name}.size")
    zero = onnx.helper.make_tensor("value", onnx.TensorProto.INT32, [1], [0])
    empty = e.op("ConstantOfShape", [size], f"{name}.empty", value=zero)
    plus1 = e.op("Cast", [e.op("Add", [rows, e.const(f"{name}.one_s", np.int64(1))],
                               f"{name}.rows1")], f"{name}.rows1_i32", to=onnx.TensorProto.INT32)
    flat = e.op("ScatterElements", [empty, keys, plus1], name, axis=0)
    return IndexGrid(flat, tuple(extents), strides, batches), keys, order


def known_sorted(coords: gs.Tensor) -> bool:
    """Sites listed by NonZero (a region's, or a grid-form regular conv's output sites): in
    row-major order, which is key order."""
    t = coords
    while len(t.inputs) == 1 and t.inputs[0].op in ("Identity", "Cast", "CastLike"):
        t = t.inputs[0].inputs[0]
    producer = t.inputs[0] if len(t.inputs) == 1 else None
    return producer is not None and producer.op == "Transpose" and \
        list(producer.attrs.get("perm", [])) == [1, 0] and bool(producer.inputs[0].inputs) and \
        producer.inputs[0].inputs[0].op == "NonZero"


def read_grid(grid: IndexGrid, queries: gs.Tensor, e: OnnxBuilder, name: str,
              width: int | None = None) -> gs.Tensor:
    """The grid's entries at the query keys (int64; [Q, width] when ``width`` is given, else
    any shape), by GatherElements over a [1, L] view of the grid and [1, Q] of the keys: one
    element each, where Gather copies a slice per index (measured on onnxruntime, 1 thread,
    thread CPU time: 2.6M int32 lookups in a 140k grid 11.8 ms by Gather, 2.8 ms by
    GatherElements)."""
    row = e.op("Unsqueeze", [grid.flat, e.i64(f"{name}.axis0", [0])], f"{name}.grid_row")
    keys = e.op("Reshape", [queries, e.i64(f"{name}.one_row", [1, -1])], f"{name}.keys_row")
    found = e.op("GatherElements", [row, keys], f"{name}.found", axis=1)
    shape = e.i64(f"{name}.shape", [-1, width]) if width is not None else \
        e.op("Shape", [queries], f"{name}.query_shape")
    return e.op("Reshape", [found, shape], name)


def lookup_grid(grid: IndexGrid, queries: gs.Tensor, e: OnnxBuilder, name: str) -> gs.Tensor:
    """The row of the site at each query key (int64, any shape), -1 where none is."""
    found = read_grid(grid, queries, e, f"{name}.at")
    wide = e.op("Cast", [found], f"{name}.i64", to=onnx.TensorProto.INT64)
    return e.op("Sub", [wide, e.const(f"{name}.one", np.int64(1))], name)


def pooled_sites(grid: IndexGrid, kernel, strides, dilations, out_shape, e: OnnxBuilder,
                 name: str = "out_sites") -> gs.Tensor:
    """[M, 1 + D] int64: the output sites of a regular conv whose padded input is ``grid`` (its
    margins the conv's pads_begin) -- every output whose window holds a site, row-major."""
    rank = len(grid.extents)
    occupied = e.op("Cast", [grid.flat], f"{name}.as_float", to=onnx.TensorProto.FLOAT)
    shape = e.op("Concat", [grid.batches, e.i64(f"{name}.dims", [1, *grid.extents])],
                 f"{name}.shape", axis=0)
    pooled = e.op("MaxPool", [e.op("Reshape", [occupied, shape], f"{name}.grid")], f"{name}.pool",
                  kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations))
    axes = list(range(2, 2 + rank))
    cropped = e.op("Slice", [pooled, e.i64(f"{name}.starts", [0] * rank),
                             e.i64(f"{name}.ends", list(out_shape)), e.i64(f"{name}.axes", axes)],
                   f"{name}.cropped")
    active = e.op("Greater", [e.op("Squeeze", [cropped, e.i64(f"{name}.ax1", [1])],
                                   f"{name}.squeezed"), e.const(f"{name}.zero", np.float32(0))],
                  f"{name}.active")
    return e.op("Transpose", [e.op("NonZero", [active], f"{name}.t")], name, perm=[1, 0])


def blocked_sites(c64: gs.Tensor, grid: IndexGrid, kernel, pads_begin, out_shape, e: OnnxBuilder,
                  name: str = "out_sites") -> gs.Tensor:
    """``pooled_sites`` for a conv whose kernel equals its stride (dilation 1: the windows tile
    the grid): each site lies in one window, (c + pads_begin) // stride, so the output sites are
    where the sites' windows are -- marked by one scatter over the N sites and listed by NonZero
    over the output grid, without reading the whole input grid as MaxPool does."""
    rank = len(out_shape)
    volume = int(prod(out_shape))
    spatial = e.op("Slice", [c64, e.i64(f"{name}.s1", [1]), e.i64(f"{name}.e1", [1 + rank]),
                             e.i64(f"{name}.ax1", [1])], f"{name}.spatial")
    window = e.op("Div", [e.op("Add", [spatial, e.i64(f"{name}.pads", list(pads_begin))],
                               f"{name}.padded"), e.i64(f"{name}.kernel", list(kernel))],
                  f"{name}.window")
    cut = e.op("Less", [window, e.i64(f"{name}.out_shape", list(out_shape))], f"{name}.inside")
    inside = e.op("ReduceSum", [e.op("Cast", [cut], f"{name}.inside_i", to=onnx.TensorProto.INT64),
                                e.i64(f"{name}.ax1r", [1])], f"{name}.dims_inside", keepdims=0)
    keep = e.op("Equal", [inside, e.const(f"{name}.rank", np.int64(rank))], f"{name}.keep")
    scaled = e.op("Mul", [window, e.i64(f"{name}.ostrides", key_strides(out_shape)[1:])],
                  f"{name}.scaled")
    keys = e.op("Add", [e.op("ReduceSum", [scaled, e.i64(f"{name}.ax1s", [1])],
                             f"{name}.spatial_key", keepdims=0),
                        e.op("Mul", [e.column(c64, 0, f"{name}.batch"),
                                     e.const(f"{name}.volume", np.int64(volume))],
                             f"{name}.batch_key")], f"{name}.keys")
    keys = e.op("Compress", [keys, keep], f"{name}.kept_keys")
    one = onnx.helper.make_tensor("value", onnx.TensorProto.INT32, [1], [1])
    ones = e.op("ConstantOfShape", [e.op("Shape", [keys], f"{name}.n")], f"{name}.ones", value=one)
    zero = onnx.helper.make_tensor("value", onnx.TensorProto.INT32, [1], [0])
    size = e.op("Mul", [grid.batches, e.i64(f"{name}.out_volume", [volume])], f"{name}.size")
    marks = e.op("ScatterElements", [e.op("ConstantOfShape", [size], f"{name}.empty", value=zero),
                                     keys, ones], f"{name}.marks", axis=0)
    shape = e.op("Concat", [grid.batches, e.i64(f"{name}.dims", list(out_shape))],
                 f"{name}.shape", axis=0)
    active = e.op("Cast", [e.op("Reshape", [marks, shape], f"{name}.grid")], f"{name}.active",
                  to=onnx.TensorProto.BOOL)
    return e.op("Transpose", [e.op("NonZero", [active], f"{name}.t")], name, perm=[1, 0])
