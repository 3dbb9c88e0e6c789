"""SparseConv in standard ONNX: gather the input rows of each kernel tap's pairs, one MatMul per
tap, scatter-add into the output rows (ScatterND, reduction=add, opset 16).

The rulebook takes one of two forms, chosen per node and recorded:

* **precomputed** -- the coordinates are constant in the graph: the rulebook is built here (numpy,
  ``rulebook.build_rulebook``) and its pairs and output coordinates become initializers; taps with
  no pair are left out.
* **in the graph** -- the coordinates arrive at run time: the graph builds the rulebook itself.
  Where the grid is small enough (``index_grid``: at most 16M positions per batch item), one
  ScatterElements makes a dense index grid of the sites and every lookup is a Gather of it: a
  submanifold conv reads it at ``key + delta`` for every tap, a regular conv finds its output
  sites where a MaxPool of the grid is non-zero (a scatter of the sites' windows where the kernel
  equals the stride; NonZero lists them in sorted-key order) and reads the grid at each output's
  window, an inverse conv reads the coarse sites' grid at each fine site's candidates. That gives
  the output-major table [M, K] the implicit GEMM reads (``implicit_gemm_graph``: a Gather and a
  MatMul per row chunk, no scatter); the per-tap pairs are made from it only where an inverse
  conv reads them backwards. Sites in no known order (a graph input's) are first sorted by key
  (one TopK of N keys), so that neighbouring lookups and row gathers read neighbouring memory;
  NonZero's sites are in key order already. Beyond the limit the sort-based form stays:
  coordinates become int64
  keys (as in ``rulebook``); a submanifold conv looks up ``key + delta``
  for half of the taps (the other half are their mirrors) by one sort of the input keys and all
  the queries -- a query matches an input site exactly when it lands in its run of equal keys --
  and a ScatterElements table from run to input row; a regular conv computes every (site, tap)
  candidate output key, keeps the valid ones (Compress), and the sorted distinct keys are the
  output sites in our order. Memory scales with sites x taps, never the grid. The sort is TopK
  (k = all) with CumSum over the run starts, not ONNX's Unique: onnxruntime's Unique took 1.05 s
  (0.79 s unsorted) on 700k int64 keys where TopK took 0.08 s.
  Nothing checks the coordinates at run time: out-of-range or repeated coordinates give wrong
  results (as in spconv); our numpy executor and the precomputed form reject them.

Every ScatterND adds one tap's products, and within one tap no output row repeats. That is not a
style choice: onnxruntime's CPU ScatterND splits its index rows over threads, so one ScatterND
whose indices repeat a row races on more than one thread (measured: max error 3.4 and different
results run to run on 2 threads; exact on 1). The price is one copy of the [M, Cout] accumulator per
tap (onnxruntime does not scatter in place).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx import OnnxBuilder
from .forms import GatherSum, ImplicitGemm
from .index_grid import (GRID_OPS, blocked_sites, build_grid, grid_fits, key_strides, known_sorted,
                         lookup_grid, pooled_sites, site_keys, why)
from .rulebook import Rulebook, _row_major_strides
from ..ops.sparse_conv import SparseConvAttrs

MIN_OPSET = 16          # ScatterND's reduction attribute
PRECOMPUTED_OPS = frozenset({"Gather", "MatMul", "Concat", "ReduceSum", "Reshape", "Add",
                             "Identity"})
IN_GRAPH_OPS = PRECOMPUTED_OPS | {"ScatterND", "ConstantOfShape", "CastLike", "Cast", "Mul", "Sub",
                                  "Unsqueeze", "Squeeze", "TopK", "CumSum", "Slice", "Shape", "Range",
                                  "ScatterElements",
                                  "Less", "Not", "Compress", "Split", "Div", "Mod", "Equal",
                                  "GreaterOrEqual", "And", "Min", "Max"} | GRID_OPS


@dataclass
class GraphRulebook:
    """A rulebook as tensors of the graph: per tap (input rows, output rows [p, 1]) or None."""

    pairs: list[tuple[gs.Tensor, gs.Tensor] | None]     # 1-D (input rows, output rows)
    out_coords: gs.Tensor
    out_rows: gs.Tensor | None          # [1] int64 (regular: the accumulator's rows)
    centre: int | None = None
    form: str = "graph"
    rulebook: Rulebook | None = None    # the numpy one, when precomputed
    notes: list[str] = field(default_factory=list)
    lookups: str = ""                   # in the graph: how the lookups run and why (index_grid)
    table: gs.Tensor | None = None      # [M, K] int32 (index grid): row + 1 of output m's input
    #                                     at tap k, 0 where none; ``pairs`` then made on demand
    table_taps: int = 0                 # K
    table_rows_max: int = 0             # its rows at most, per batch item: the output grid's size
    in_order: gs.Tensor | None = None   # table value v - 1 is the position of input row
    #                                     in_order[v - 1] (sites sorted for locality); None: the row
    out_order: gs.Tensor | None = None  # table row i is output row out_order[i]; None: row i
    out_position: gs.Tensor | None = None   # the inverse of out_order


def precomputed_rulebook(rb: Rulebook, e: OnnxBuilder) -> GraphRulebook:
    """A rulebook built at rewrite time: its output coordinates an initializer; the form that
    runs it (``forms``) makes its own index constants."""
    return GraphRulebook([], e.const("out_coords_value", rb.out_coords),
                         e.i64("out_rows", [rb.num_out]), rb.identity_tap, "precomputed", rb)


class SharedConstants:
    """Index constants of one precomputed rulebook's form, emitted once: the layers that share the
    rulebook share the initializers too (the model stores each table once)."""

    def __init__(self):
        self._made: dict[int, tuple[np.ndarray, gs.Constant]] = {}

    def get(self, e: OnnxBuilder, name: str, value: np.ndarray) -> gs.Constant:
        hit = self._made.get(id(value))
        if hit is None:
            hit = (value, e.i64(name, value))      # the array is kept alive with its constant
            self._made[id(value)] = hit
        return hit[1]


def emit_form(features: gs.Tensor, taps: np.ndarray, bias: np.ndarray | None,
              plan: "GatherSum | ImplicitGemm", out_features: gs.Tensor, e: OnnxBuilder,
              consts: SharedConstants) -> None:
    """The chosen scatter-free form (``forms``) of a precomputed rulebook; ``taps`` is
    [K, Cin, Cout] in the features' dtype."""
    x = features
    if plan.order is not None:
        x = e.op("Gather", [features, consts.get(e, "order", plan.order)], "in_coordinate_order",
                 axis=0)
    if isinstance(plan, ImplicitGemm):
        y = _implicit_gemm(x, taps, plan, e, consts)
    else:
        y = _gather_sum(x, taps, plan, e, consts)
    if plan.final is not None:
        y = e.op("Gather", [y, consts.get(e, "final", plan.final)], "in_output_order", axis=0)
    if bias is not None:
        e.op("Add", [y, e.const("bias", bias)], "bias", out=out_features)
    else:
        e.op("Identity", [y], "result", out=out_features)


def _gather_sum(x: gs.Tensor, taps: np.ndarray, plan: GatherSum, e: OnnxBuilder,
                consts: SharedConstants) -> gs.Tensor:
    cout = taps.shape[2]
    products = []
    for k, rows in plan.tap_inputs:
        g = x if rows is None else e.op("Gather", [x, consts.get(e, f"tap{k}.in", rows)],
                                        f"tap{k}.gather", axis=0)
        products.append(e.op("MatMul", [g, e.const(f"w{k}", taps[k])], f"tap{k}.gemm"))
    parts = []
    if products:
        pool = products[0] if len(products) == 1 else e.op("Concat", products, "pool", axis=0)
        for table in plan.groups:
            if table is None:
                parts.append(pool)
                continue
            width = 1 if table.ndim == 1 else table.shape[1]
            picked = e.op("Gather", [pool, consts.get(e, f"sum{width}", table)],
                          f"sum{width}.gather", axis=0)
            parts.append(picked if width == 1 else
                         e.op("ReduceSum", [picked, e.i64(f"sum{width}.axis", [1])],
                              f"sum{width}", keepdims=0))
    if plan.empty_rows or not parts:
        parts.append(e.const("unreached", np.zeros((plan.empty_rows, cout), taps.dtype)))
    return parts[0] if len(parts) == 1 else e.op("Concat", parts, "rows", axis=0)


def _implicit_gemm(x: gs.Tensor, taps: np.ndarray, plan: ImplicitGemm, e: OnnxBuilder,
                   consts: SharedConstants) -> gs.Tensor:
    cin, cout = taps.shape[1], taps.shape[2]
    padded = e.op("Concat", [x, e.const("zero_row", np.zeros((1, cin), taps.dtype))], "with_zero",
                  axis=0)
    weight = e.const("w_stacked", taps[plan.taps].reshape(len(plan.taps) * cin, cout))
    shape = e.i64("row_shape", [-1, len(plan.taps) * cin])
    chunks = []
    step = plan.chunk(cin, taps.dtype.itemsize)
    for c, start in enumerate(range(0, max(len(plan.table), 1), step)):
        table = plan.table[start:start + step]
        rows = e.op("Gather", [padded, consts.get(e, f"neighbours{c}", table)],
                    f"chunk{c}.gather", axis=0)
        flat = e.op("Reshape", [rows, shape], f"chunk{c}.rows")
        chunks.append(e.op("MatMul", [flat, weight], f"chunk{c}.gemm"))
    return chunks[0] if len(chunks) == 1 else e.op("Concat", chunks, "rows", axis=0)


def graph_rulebook(coords: gs.Tensor, attrs: SparseConvAttrs, e: OnnxBuilder) -> GraphRulebook:
    """Nodes that build the rulebook from the run-time coordinates."""
    c64 = e.cast64(coords, "coords64")
    n = e.rows(coords, "n")
    rows = e.op("Range", [e.const("zero", np.int64(0)),
                          e.op("Squeeze", [n, e.i64("axis0", [0])], "n_scalar"),
                          e.const("step", np.int64(1))], "rows")
    if attrs.submanifold:
        return _graph_submanifold(c64, coords, n, rows, attrs, e)
    return _graph_regular(c64, coords, rows, attrs, e)


def _graph_submanifold(c64, coords, n, rows, attrs: SparseConvAttrs, e: OnnxBuilder) -> GraphRulebook:
    kv = attrs.kernel_volume
    margins = [(k // 2) * d for k, d in zip(attrs.kernel_shape, attrs.dilations)]
    extents = [s + 2 * m for s, m in zip(attrs.spatial_shape, margins)]
    half = kv // 2
    out_coords = e.op("Identity", [coords], "same_coords")
    if not half:
        rb = GraphRulebook([None], out_coords, None, 0)
        rb.lookups = "none: a pointwise conv"
        return rb
    centre = np.asarray([k // 2 for k in attrs.kernel_shape])
    deltas = ((attrs.taps() - centre) * np.asarray(attrs.dilations)) @ key_strides(extents)[1:]
    if grid_fits(extents):      # output-major: every site's every neighbour (centre included)
        grid, keys, order = build_grid(c64, rows, margins, extents, e,
                                       sort=not known_sorted(coords))
        rb = GraphRulebook([], out_coords, None, None, table=grid_table(grid, keys, deltas, e),
                           table_taps=kv, in_order=order, out_order=order,
                           table_rows_max=int(np.prod(attrs.spatial_shape)))
        if order is not None:
            rb.out_position = _inverse(order, rows, e)
        rb.lookups = why(extents, 1 + half) + _sorted_note(order)
        return rb
    keys = site_keys(c64, margins, key_strides(extents), e, "keys")
    queries = e.op("Add", [e.op("Unsqueeze", [keys, e.i64("axis0u", [0])], "keys_row"),
                           e.i64("deltas", deltas[:half].reshape(-1, 1))], "queries")
    match = lookup(keys, rows, n, queries, half, e)
    pairs: list = [None] * kv
    for t in range(half):
        src, dst = _found_pairs(e.op("Gather", [match, e.const(f"t{t}", np.int64(t))],
                                     f"tap{t}.match", axis=0), rows, e, f"tap{t}")
        pairs[t] = (src, dst)
        pairs[kv - 1 - t] = (dst, src)
    rb = GraphRulebook(pairs, out_coords, None, half)
    rb.lookups = why(extents, 1 + half)
    return rb


def grid_table(grid, keys: gs.Tensor, deltas: np.ndarray, e: OnnxBuilder) -> gs.Tensor:
    """[M, K] int32: the grid at each output's key + each tap's offset (row + 1, 0: none)."""
    queries = e.op("Add", [e.op("Unsqueeze", [keys, e.i64("axis1u", [1])], "keys_column"),
                           e.i64("deltas", deltas.reshape(1, -1))], "queries")
    return e.op("Gather", [grid.flat, queries], "table", axis=0)


def _found_pairs(row: gs.Tensor, out_rows: gs.Tensor, e: OnnxBuilder, name: str):
    """(input rows, output rows) where ``row`` (an input row per output, -1: none) is found."""
    found = e.op("Not", [e.op("Less", [row, e.const("zero_i", np.int64(0))], f"{name}.absent")],
                 f"{name}.found")
    return (e.op("Compress", [row, found], f"{name}.in"),
            e.op("Compress", [out_rows, found], f"{name}.out"))


def tap_pairs(rb: GraphRulebook, e: OnnxBuilder) -> list:
    """The rulebook's per-tap pairs; made from its table the first time they are asked for."""
    if rb.pairs or rb.table is None:
        return rb.pairs
    match = e.op("Sub", [e.op("Cast", [rb.table], "table_i64", to=onnx.TensorProto.INT64),
                         e.const("one_t", np.int64(1))], "match")
    out_rows = _rows_of(rb.table, e, "table_rows")
    pairs = [_found_pairs(e.op("Gather", [match, e.const(f"k{k}", np.int64(k))],
                               f"tap{k}.match", axis=1), out_rows, e, f"tap{k}")
             for k in range(rb.table_taps)]
    rb.pairs = [(_through(rb.in_order, src, e, f"tap{k}.in_rows"),
                 _through(rb.out_order, dst, e, f"tap{k}.out_rows")) for k, (src, dst) in
                enumerate(pairs)]
    return rb.pairs


def _through(order: gs.Tensor | None, positions: gs.Tensor, e: OnnxBuilder, name: str):
    """``order[positions]`` (rows of the positions in that order), or the positions."""
    return positions if order is None else e.op("Gather", [order, positions], name, axis=0)


def lookup(keys: gs.Tensor, rows: gs.Tensor, n: gs.Tensor, queries: gs.Tensor, taps: int,
           e: OnnxBuilder) -> gs.Tensor:
    """[taps, Q] the row whose key equals each query ([taps, Q] int64), -1 where none does: one
    sort of the n site keys and all queries together -- a query matches a site exactly when it
    lands in that site's run of equal keys -- and a table from run to site row."""
    flat = e.op("Reshape", [queries, e.i64("flat", [-1])], "queries_flat")
    _, inverse = sort_unique(e.op("Concat", [keys, flat], "all_keys", axis=0), e, "runs")
    big = e.i64("end", [np.iinfo(np.int64).max])
    ids_sites = e.op("Slice", [inverse, e.i64("start0", [0]), n], "ids_sites")
    ids_queries = e.op("Reshape", [e.op("Slice", [inverse, n, big], "ids_q"),
                                   e.i64("tn", [taps, -1])], "ids_q_taps")
    absent = onnx.helper.make_tensor("value", onnx.TensorProto.INT64, [1], [-1])
    table = e.op("ConstantOfShape", [e.op("Shape", [inverse], "ids_shape")], "table0",
                 value=absent)
    table = e.op("ScatterElements", [table, ids_sites, rows], "table")
    return e.op("Gather", [table, ids_queries], "match")


def sort_unique(x: gs.Tensor, e: OnnxBuilder, name: str) -> tuple[gs.Tensor, gs.Tensor]:
    """(sorted distinct values, index of each element's value among them) of a 1-D int64 tensor:
    ONNX's Unique(sorted=1) by TopK + CumSum over the starts of runs of equal values."""
    n = e.op("Shape", [x], f"{name}.n")
    ordered, perm = e.multi("TopK", [x, n], f"{name}.sort", 2, axis=0, largest=0, sorted=1)
    big = e.i64(f"{name}.end", [np.iinfo(np.int64).max])
    later = e.op("Slice", [ordered, e.i64(f"{name}.one", [1]), big], f"{name}.later")
    earlier = e.op("Slice", [ordered, e.i64(f"{name}.zero", [0]), e.i64(f"{name}.last", [-1])],
                   f"{name}.earlier")
    changes = e.op("Not", [e.op("Equal", [later, earlier], f"{name}.same")], f"{name}.changes")
    first = e.op("Concat", [e.const(f"{name}.first", np.array([True])), changes], f"{name}.starts0",
                 axis=0)
    starts = e.op("Slice", [first, e.i64(f"{name}.zero_s", [0]), n], f"{name}.starts")  # n = 0
    run = e.op("Sub", [e.op("CumSum", [e.op("Cast", [starts], f"{name}.starts_i",
                                                  to=onnx.TensorProto.INT64),
                                         e.const(f"{name}.axis", np.int64(0))], f"{name}.count"),
                       e.const(f"{name}.one_s", np.int64(1))], f"{name}.run")
    values = e.op("Compress", [ordered, starts], f"{name}.values")
    zeros = e.op("ConstantOfShape", [n], f"{name}.zeros",
                 value=onnx.helper.make_tensor("value", onnx.TensorProto.INT64, [1], [0]))
    inverse = e.op("ScatterElements", [zeros, perm, run], f"{name}.inverse")
    return values, inverse


def _column(x: gs.Tensor, e: OnnxBuilder, name: str) -> gs.Tensor:
    return e.op("Unsqueeze", [x, e.i64(f"{name}.axis1", [1])], f"{name}.out_rows")


def _graph_candidates(c64, attrs: SparseConvAttrs, e: OnnxBuilder) -> tuple[gs.Tensor, gs.Tensor]:
    """([K, N] bool: tap k takes site n onto the output grid, [K, N] int64: that output's key,
    (batch, o) row-major over the output grid) -- as ``rulebook._candidates``, one spatial dim at
    a time: the tests and the key of a tap are per-dim terms ([k_i, N] each), joined by
    broadcasting over the taps (And, Add), not computed on [K, N, D] (the 27 x 120k x 3 int64
    Mod, Div, Mul, Add, Less and ReduceSums of the middle encoder's first strided conv took ~1 s
    of its 3.5 s, profiled under load)."""
    kv, rank = attrs.kernel_volume, attrs.rank
    out_shape = attrs.out_spatial_shape
    ostrides = _row_major_strides(out_shape)
    valid = None
    key = e.op("Mul", [e.column(c64, 0, "batch"), e.const("volume", np.int64(np.prod(out_shape)))],
               "batch_key")
    for i, (k, s, d, p) in enumerate(zip(attrs.kernel_shape, attrs.strides, attrs.dilations,
                                         attrs.pads_begin)):
        at = [1] * rank + [-1]
        at[i] = k
        num = e.op("Add", [e.op("Unsqueeze", [e.column(c64, 1 + i, f"dim{i}"),
                                              e.i64(f"ax0_{i}", [0])], f"dim{i}.row"),
                           e.i64(f"tap_shift{i}", (p - np.arange(k) * d).reshape(k, 1))],
                   f"dim{i}.numer")
        ok = e.op("GreaterOrEqual", [num, e.const("zero", np.int64(0))], f"dim{i}.nonneg")
        q = num
        if s > 1:
            q = e.op("Div", [num, e.const(f"stride{i}", np.int64(s))], f"dim{i}.quot")
            ok = e.op("And", [ok, e.op("Equal", [e.op("Mod", [num, e.const(f"stride{i}m",
                                                                           np.int64(s))],
                                                      f"dim{i}.rem"),
                                                 e.const("zero_r", np.int64(0))],
                                       f"dim{i}.divides")], f"dim{i}.ok_div")
        ok = e.op("And", [ok, e.op("Less", [q, e.const(f"out{i}", np.int64(out_shape[i]))],
                                   f"dim{i}.inside")], f"dim{i}.ok")
        shape = e.i64(f"dim{i}.shape", at)
        ok = e.op("Reshape", [ok, shape], f"dim{i}.ok_taps")
        term = e.op("Reshape", [e.op("Mul", [q, e.const(f"ostride{i}", np.int64(ostrides[i]))],
                                     f"dim{i}.key"), shape], f"dim{i}.key_taps")
        valid = ok if valid is None else e.op("And", [valid, ok], f"valid{i}")
        key = e.op("Add", [key, term], f"okey{i}")
    kn = e.op("Concat", [e.i64("taps", [kv]), e.rows(c64, "n_sites")], "kn", axis=0)
    return (e.op("Reshape", [valid, kn], "valid"), e.op("Reshape", [key, kn], "okey"))


def _graph_out_keys(c64, q, attrs: SparseConvAttrs, e: OnnxBuilder, name: str,
                    spatial_axis: int) -> gs.Tensor:
    """Keys (batch, q) row-major over the output grid; ``q`` holds output coordinates along
    ``spatial_axis`` (``c64``'s column 0 is the batch)."""
    out_shape = attrs.out_spatial_shape
    volume = int(np.prod(out_shape))
    batch_key = e.op("Mul", [e.column(c64, 0, f"{name}.batch"), e.const(f"{name}.volume",
                                                                       np.int64(volume))],
                     f"{name}.batch_key")
    scaled = e.op("Mul", [q, e.i64(f"{name}.ostrides", _row_major_strides(out_shape))],
                  f"{name}.scaled")
    spatial = e.op("ReduceSum", [scaled, e.i64(f"{name}.axis", [spatial_axis])],
                   f"{name}.spatial", keepdims=0)
    return e.op("Add", [spatial, batch_key], name)


def _graph_regular(c64, coords, rows, attrs: SparseConvAttrs, e: OnnxBuilder) -> GraphRulebook:
    if passes_sites_through(attrs) and known_sorted(coords):
        rb = GraphRulebook([None], e.op("Identity", [coords], "same_sites"), None, 0)
        rb.lookups = ("none: a 1x1 stride-1 unpadded conv over sites in key order (NonZero's): "
                      "its output sites are its input sites, in the same order")
        return rb
    extents = [max(s + p, (o - 1) * st + (k - 1) * d + 1) for s, p, o, st, k, d in zip(
        attrs.spatial_shape, attrs.pads_begin, attrs.out_spatial_shape, attrs.strides,
        attrs.kernel_shape, attrs.dilations)]
    if grid_fits(extents):
        rb = _graph_regular_grid(c64, coords, rows, attrs, extents, e)
    else:
        rb = _graph_regular_sorted(c64, coords, rows, attrs, e)
    rb.lookups = why(extents, attrs.kernel_volume) + rb.lookups
    return rb


def passes_sites_through(attrs: SparseConvAttrs) -> bool:
    """A regular conv whose every output reads exactly the input site at its own position:
    kernel 1, stride 1, no padding (its output grid is its input grid)."""
    return attrs.kernel_volume == 1 and all(s == 1 for s in attrs.strides) and not any(attrs.pads)


def _graph_regular_grid(c64, coords, rows, attrs: SparseConvAttrs, extents, e: OnnxBuilder
                        ) -> GraphRulebook:
    """Output-major: the output sites are where a MaxPool of the input's index grid (padded by
    pads_begin) finds a site; output o reads the grid at o x stride + tap x dilation."""
    grid, _, order = build_grid(c64, rows, attrs.pads_begin, extents, e,
                                sort=not known_sorted(coords))
    if tuple(attrs.kernel_shape) == tuple(attrs.strides) and all(d == 1 for d in attrs.dilations):
        out64 = blocked_sites(c64, grid, attrs.kernel_shape, attrs.pads_begin,
                              attrs.out_spatial_shape, e)
    else:
        out64 = pooled_sites(grid, attrs.kernel_shape, attrs.strides, attrs.dilations,
                             attrs.out_spatial_shape, e)
    base = site_keys(out64, [0] * attrs.rank,
                     [grid.strides[0]] + [s * st for s, st in zip(grid.strides[1:], attrs.strides)],
                     e, "out_keys")
    deltas = (attrs.taps() * np.asarray(attrs.dilations)) @ np.asarray(grid.strides[1:])
    out_coords = e.op("CastLike", [out64, coords], "out_coords")
    rb = GraphRulebook([], out_coords, e.rows(out64, "out_rows"),
                       table=grid_table(grid, base, deltas, e), table_taps=len(deltas),
                       in_order=order, table_rows_max=int(np.prod(attrs.out_spatial_shape)))
    rb.lookups = _sorted_note(order)
    return rb


def _inverse(order: gs.Tensor, rows: gs.Tensor, e: OnnxBuilder) -> gs.Tensor:
    """The position of each row in ``order`` (a permutation of ``rows``)."""
    zero = onnx.helper.make_tensor("value", onnx.TensorProto.INT64, [1], [0])
    empty = e.op("ConstantOfShape", [e.op("Shape", [order], "order_n")], "position0", value=zero)
    return e.op("ScatterElements", [empty, order, rows], "position", axis=0)


def _sorted_note(order) -> str:
    return "" if order is None else "; the sites sorted by key first (TopK), for locality"


def _graph_regular_sorted(c64, coords, rows, attrs: SparseConvAttrs, e: OnnxBuilder
                          ) -> GraphRulebook:
    """Input-major: every (site, tap) candidate output key, the sorted distinct ones the output
    sites (``sort_unique``)."""
    kv, rank = attrs.kernel_volume, attrs.rank
    out_shape = attrs.out_spatial_shape
    volume = int(np.prod(out_shape))
    ostrides = _row_major_strides(out_shape)
    valid, okey = _graph_candidates(c64, attrs, e)
    srcs, keys, sizes = [], [], []
    for k in range(kv):
        at = e.const(f"k{k}", np.int64(k))
        v = e.op("Gather", [valid, at], f"tap{k}.valid", axis=0)
        srcs.append(e.op("Compress", [rows, v], f"tap{k}.in"))
        keys.append(e.op("Compress", [e.op("Gather", [okey, at], f"tap{k}.keys_all", axis=0), v],
                         f"tap{k}.keys"))
        sizes.append(e.op("Shape", [keys[-1]], f"tap{k}.count"))
    cat = e.op("Concat", keys, "cand_keys", axis=0) if kv > 1 else keys[0]
    uniq, inverse = sort_unique(cat, e, "unique")
    if kv > 1:
        dsts = e.multi("Split", [inverse, e.op("Concat", sizes, "counts", axis=0)], "per_tap", kv,
                       axis=0)
    else:
        dsts = [inverse]
    pairs = list(zip(srcs, dsts))
    parts = [e.op("Div", [uniq, e.const("vol", np.int64(volume))], "out_b")]
    for i in range(rank):
        parts.append(e.op("Mod", [e.op("Div", [uniq, e.const(f"ost{i}", np.int64(ostrides[i]))],
                                       f"out_q{i}"), e.const(f"osh{i}", np.int64(out_shape[i]))],
                          f"out_c{i}"))
    cols = [e.op("Unsqueeze", [p, e.i64(f"col{i}", [1])], f"out_col{i}")
            for i, p in enumerate(parts)]
    out64 = e.op("Concat", cols, "out_coords64", axis=1)
    out_coords = e.op("CastLike", [out64, coords], "out_coords")
    return GraphRulebook(pairs, out_coords, e.op("Shape", [uniq], "out_rows"))


def graph_inverse_rulebook(coarse: gs.Tensor, fine: gs.Tensor, attrs: SparseConvAttrs,
                           e: OnnxBuilder) -> GraphRulebook:
    """A SparseInverseConv's rulebook from run-time coordinates: each fine site's candidate
    coarse site per tap (as the strided conv computes it), looked up among the coarse sites --
    in their index grid (``index_grid``) where it fits, else by one sort of both key sets
    (``sort_unique``) and a table from sort run to coarse row."""
    kv = attrs.kernel_volume
    f64, c64 = e.cast64(fine, "fine64"), e.cast64(coarse, "coarse64")
    fine_rows = _rows_of(fine, e, "fine_rows")
    coarse_rows = _rows_of(coarse, e, "coarse_rows")
    valid, okey = _graph_candidates(f64, attrs, e)
    extents = attrs.out_spatial_shape
    if grid_fits(extents):      # the candidates' keys are the coarse grid's (no margins)
        grid, _, _ = build_grid(c64, coarse_rows, [0] * attrs.rank, extents, e, also=f64)
        inside = e.op("Where", [valid, okey, e.const("key0", np.int64(0))], "valid_keys")
        match = lookup_grid(grid, inside, e, "match")
    else:
        csp = e.op("Slice", [c64, e.i64("cs1", [1]), e.i64("ce1", [1 + attrs.rank]),
                             e.i64("cax1", [1])], "coarse_spatial")
        ckeys = _graph_out_keys(c64, csp, attrs, e, "coarse_keys", spatial_axis=1)
        match = lookup(ckeys, coarse_rows, e.rows(coarse, "m"), okey, kv, e)
    found = e.op("And", [valid, e.op("Not", [e.op("Less", [match, e.const("zero_m", np.int64(0))],
                                                  "absent")], "present")], "found")
    pairs = []
    for k in range(kv):
        at = e.const(f"k{k}", np.int64(k))
        hit = e.op("Gather", [found, at], f"tap{k}.found", axis=0)
        pairs.append((e.op("Compress", [e.op("Gather", [match, at], f"tap{k}.match", axis=0), hit],
                           f"tap{k}.in"),
                      e.op("Compress", [fine_rows, hit], f"tap{k}.out")))
    rb = GraphRulebook(pairs, fine, e.rows(fine, "out_rows"))
    rb.lookups = why(extents, kv + 1)
    return rb


def reversed_rulebook(rb: GraphRulebook, fine: gs.Tensor, e: OnnxBuilder) -> GraphRulebook:
    """A regular conv's in-graph rulebook read backwards: its inverse conv's (shared, as spconv's
    ``indice_key``): each tap's pairs swapped, onto the conv's input sites ``fine``."""
    pairs = [None if p is None else (p[1], p[0]) for p in tap_pairs(rb, e)]
    return GraphRulebook(pairs, fine, e.rows(fine, "out_rows"))


def _rows_of(x: gs.Tensor, e: OnnxBuilder, name: str) -> gs.Tensor:
    n = e.rows(x, f"{name}.n")
    return e.op("Range", [e.const(f"{name}.zero", np.int64(0)),
                          e.op("Squeeze", [n, e.i64(f"{name}.axis0", [0])], f"{name}.n_scalar"),
                          e.const(f"{name}.step", np.int64(1))], name)


def gather_gemm_scatter(features: gs.Tensor, taps: np.ndarray, bias: np.ndarray | None,
                        rb: GraphRulebook, out_features: gs.Tensor, e: OnnxBuilder) -> None:
    """out = [bias +] sum over taps k of scatter(out rows_k, gather(features, in rows_k) @ W_k);
    ``taps`` is [K, Cin, Cout] in the features' dtype."""
    cout = taps.shape[2]
    if rb.centre is not None:
        acc = e.op("MatMul", [features, e.const(f"w{rb.centre}", taps[rb.centre])], "centre")
    else:
        rows = rb.out_rows if rb.out_rows is not None else e.rows(features, "out_rows")  # SubM
        shape = e.op("Concat", [rows, e.i64("cout", [cout])], "acc_shape", axis=0)
        acc = e.zeros(shape, features, "acc0")
    for k, pair in enumerate(tap_pairs(rb, e)):
        if pair is None:
            continue
        src, dst = pair
        gathered = e.op("Gather", [features, src], f"tap{k}.gather", axis=0)
        product = e.op("MatMul", [gathered, e.const(f"w{k}", taps[k])], f"tap{k}.gemm")
        acc = e.op("ScatterND", [acc, _column(dst, e, f"tap{k}"), product], f"tap{k}.scatter",
                   reduction="add")
    if bias is not None:
        e.op("Add", [acc, e.const("bias", bias)], "bias", out=out_features)
    else:
        e.op("Identity", [acc], "result", out=out_features)


# The implicit GEMM's gathered block [M, K x Cin] in row chunks, so that each chunk's Gather
# writes and its MatMul reads it from cache: measured on onnxruntime, 1 thread, [27241, 27 x 32]
# (94 MB): one block 31.9 ms, 4 chunks 19.6, 16 chunks 15.4, 64 chunks 12.9 (CPU time). M is
# known at run time only, so the count of chunks is fixed here -- from the most rows the table
# can have (its output grid), at most GRAPH_CHUNKS (3 nodes each) -- and Split cuts the table
# into that many near-equal parts (empty ones where M is small).
GRAPH_CHUNK_BYTES = 4 << 20
GRAPH_CHUNKS = 16


def graph_chunks(rb: GraphRulebook, cin: int, itemsize: int) -> int:
    block = rb.table_rows_max * rb.table_taps * cin * itemsize
    return int(min(GRAPH_CHUNKS, max(1, -(-block // GRAPH_CHUNK_BYTES))))


def implicit_gemm_graph(features: gs.Tensor, taps: np.ndarray, bias: np.ndarray | None,
                        rb: GraphRulebook, out_features: gs.Tensor, e: OnnxBuilder) -> None:
    """out = [bias +] (the input rows at every output's K taps, a zero row where none) @ the taps'
    weights stacked [K x Cin, Cout]: a Gather of the rulebook's table and a MatMul per row chunk,
    no scatter (``forms.ImplicitGemm`` with the table built in the graph)."""
    kv, cin, cout = taps.shape
    x = features if rb.in_order is None else e.op("Gather", [features, rb.in_order],
                                                     "in_key_order", axis=0)
    padded = e.op("Concat", [e.const("zero_row", np.zeros((1, cin), taps.dtype)), x],
                  "with_zero", axis=0)          # table entries are row + 1: 0 reads the zero row
    weight = e.const("w_stacked", taps.reshape(kv * cin, cout))
    shape = e.i64("row_shape", [-1, kv * cin])
    chunks = graph_chunks(rb, cin, taps.dtype.itemsize)
    tables = [rb.table] if chunks == 1 else e.multi(
        "Split", [rb.table, _chunk_sizes(rb.table, chunks, e)], "chunks", chunks, axis=0)
    parts = []
    for c, table in enumerate(tables):
        rows = e.op("Gather", [padded, table], f"chunk{c}.neighbours", axis=0)
        flat = e.op("Reshape", [rows, shape], f"chunk{c}.rows")
        parts.append(e.op("MatMul", [flat, weight], f"chunk{c}.gemm"))
    y = parts[0] if chunks == 1 else e.op("Concat", parts, "rows", axis=0)
    if rb.out_position is not None:
        y = e.op("Gather", [y, rb.out_position], "in_row_order", axis=0)
    if bias is not None:
        e.op("Add", [y, e.const("bias", bias)], "bias", out=out_features)
    else:
        e.op("Identity", [y], "result", out=out_features)


def _chunk_sizes(table: gs.Tensor, chunks: int, e: OnnxBuilder) -> gs.Tensor:
    """[chunks] int64: ceil(M / chunks) rows each, the last ones shorter or empty. M is counted
    from the table's values, not read by Shape: shape learning (``batch_shapes``) takes a site
    count that comes from a graph input for a batch, probes it at 2, 3 and 5, and would pin the
    chunk sizes it sees there into the model."""
    first = e.op("Gather", [table, e.const("tap0", np.int64(0))], "chunk_first_tap", axis=1)
    present = e.op("Cast", [e.op("GreaterOrEqual", [first, e.const("zero32", np.int32(0))],
                                 "chunk_row")], "chunk_row_i", to=onnx.TensorProto.INT64)
    m = e.op("ReduceSum", [present, e.i64("chunk_axis", [0])], "chunk_m", keepdims=1)
    size = e.op("Div", [e.op("Add", [m, e.i64("chunks_less1", [chunks - 1])], "chunk_m_up"),
                        e.i64("chunk_count", [chunks])], "chunk_rows")
    left = e.op("Sub", [m, e.op("Mul", [size, e.i64("chunk_index", list(range(chunks)))],
                                "chunk_starts")], "chunk_left")
    return e.op("Max", [e.op("Min", [left, size], "chunk_capped"), e.i64("chunk_none", [0])],
                "chunk_sizes")


def graph_form(rb: GraphRulebook) -> tuple[str, str]:
    """("implicit" | "per-tap", why) for a rulebook built in the graph. The active fraction of
    the neighbourhoods is unknown until run time; where the index grid gives the output-major
    table, the implicit GEMM (4 nodes, no scatter) beat the per-tap form (~6 nodes per tap and a
    copy of the [M, Cout] accumulator in every ScatterND) on every case measured, dilating
    regular convs with 12% of their outputs' neighbours active included (onnxruntime, 1 thread,
    interleaved): benchmarks/sparse_input.py at 2% 2-D 1.25x vs 2.05x the dense time, 3-D 4.0x vs
    5.0x; the sparse U-Net 530 vs 628 ms. Without a table (sort-based lookups, inverse convs:
    one active tap per output where stride = kernel) the per-tap form stays."""
    if rb.table is not None:
        return "implicit", "implicit GEMM over the index grid's table (one Gather + MatMul)"
    if rb.centre is not None and not any(rb.pairs):
        return "per-tap", "one MatMul of the rows in place"
    return "per-tap", "Gather + MatMul + ScatterND(add)"
