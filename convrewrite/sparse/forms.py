"""How a precomputed rulebook is laid out for onnxruntime: the two scatter-free ONNX forms of the
gather-GEMM-scatter, planned in numpy and chosen by cost (``choose_form``).

onnxruntime has no in-place scatter: every ScatterND copies its whole [M, Cout] accumulator
(measured: 64 ms per ScatterND on a 512 MB accumulator, one index row), so the per-tap scatter
form costs K accumulator copies. Both forms here write each output row once:

* **gather-sum** (``GatherSum``): per kernel tap, gather the input rows of its pairs and one MatMul
  with W_k; the products of all taps form one pool (Concat); the output rows are grouped by how
  many pairs they have (w), and each group is one Gather of a [rows, w] table of pool rows and a
  ReduceSum over w -- no padding, no zero rows; the groups are put back in output order by one
  Gather. MACs = pairs x Cin x Cout, the minimum.
* **implicit GEMM** (``ImplicitGemm``): per output row, gather the input rows at every tap some
  pair uses (a zero row where a neighbour is inactive) into [M, K' x Cin], then one MatMul with
  the taps' weights stacked [K' x Cin, Cout]; in row chunks so the gathered block stays small.
  MACs = M x K' x Cin x Cout: worth it where most neighbours are active (masked images at high
  density, 2x2 stride-2 down convs), not on LiDAR-like scans (6.7 of 27 neighbours).

Random-access row gathers are latency bound (measured on onnxruntime, 1 thread: 800k rows of 64
floats in random order 105 ms, the same rows in ascending order 34 ms), so both forms first put
the sites in coordinate order when the rulebook knows it (``Rulebook.sorted_rows``: submanifold
inputs in arbitrary order): one gather of N rows in, one of M rows out, and every per-tap gather
in between reads ascending rows. Sums run in tap order within a row, so the result is the same
on any thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rulebook import Rulebook

# Cost constants (seconds per unit), onnxruntime 1.32 CPU, 1 thread, this machine kind: MLAS sgemm
# on [P, 64] x [64, 64] blocks and row Gathers/Concats of 64 floats (benchmarks/sparse.py's cases).
SECONDS_PER_MAC = 1 / 40e9
SECONDS_PER_GATHERED_FLOAT = 0.5e-9
SECONDS_PER_COPIED_FLOAT = 0.2e-9
# Per node of the form: onnxruntime's dispatch, output allocation and the small-GEMM / Concat /
# ReduceSum inefficiency the per-float constants miss. Fitted on the benchmark's U-Net (31k
# voxels, 200x200x40, 1 thread, thread CPU time): all gather-sum (as chosen before it) 95 ms;
# implicit GEMM on the six layers with 32-58% of their neighbours active 63 ms; implicit on the
# two inverse convs too (12%) 77 ms. Gather-sum writes ~2 nodes per tap and per pair count.
SECONDS_PER_NODE = 30e-6
# The implicit GEMM's MACs are one MatMul [rows, K' x Cin] x [K' x Cin, Cout] (MLAS's large-K
# case, its gathered block reused in cache) against the gather-sum's per-tap [pairs, Cin] x
# [Cin, Cout]; charged half of SECONDS_PER_MAC -- an effective rate fitted on the U-Net at
# 61,741 voxels (400x400x40): its four SubM / down convs with 40-43% of the neighbours active
# ran 189 ms as chosen by the rates alone (gather-sum), 156 ms implicit (thread CPU, 1 thread).
SECONDS_PER_IMPLICIT_MAC = SECONDS_PER_MAC / 2
IMPLICIT_BLOCK_BYTES = 32 << 20      # the gathered [rows, K' x Cin] block of one implicit chunk


@dataclass
class GatherSum:
    """The gather-sum form. All row indices are int64 constants of the graph."""

    order: np.ndarray | None            # [N] input rows in coordinate order (None: keep)
    tap_inputs: list                    # per used tap: (tap, rows of the ordered input, or None
    #                                     for all rows in order: no gather)
    groups: list                        # per pair count w: [rows, w] pool rows (w = 1: [rows];
    #                                     None: every pool row once, in order)
    final: np.ndarray | None            # [M] row of the concatenated groups for each output
    #                                     (None: the groups are already in output order)
    empty_rows: int                     # outputs no pair reaches (zero rows after the groups)
    pairs: int
    num_in: int
    num_out: int

    name = "gather-sum"

    def macs(self, cin: int, cout: int) -> int:
        return self.pairs * cin * cout

    def nodes(self) -> int:
        """Nodes the form writes (``onnx_form._gather_sum``, order and final gathers included)."""
        taps = sum(1 + (rows is not None) for _, rows in self.tap_inputs)
        sums = sum(0 if t is None else 1 + (t.ndim > 1) for t in self.groups)
        return taps + sums + (len(self.tap_inputs) > 1) + (len(self.groups) > 1) + \
            (self.order is not None) + (self.final is not None)

    def cost(self, cin: int, cout: int) -> float:
        rows = self.num_in + self.num_out
        return (self.macs(cin, cout) * SECONDS_PER_MAC
                + self.pairs * cin * SECONDS_PER_GATHERED_FLOAT
                + self.pairs * cout * (SECONDS_PER_COPIED_FLOAT + SECONDS_PER_GATHERED_FLOAT)
                + rows * max(cin, cout) * SECONDS_PER_GATHERED_FLOAT
                + self.nodes() * SECONDS_PER_NODE)


@dataclass
class ImplicitGemm:
    order: np.ndarray | None            # [N] input rows in coordinate order (None: keep)
    taps: list[int]                     # the taps some pair uses, in order
    table: np.ndarray                   # [M, K'] rows of the ordered input (N: the zero row),
    #                                     in the ordered output order
    final: np.ndarray | None            # [M] row of the result for each output (None: in order)
    num_in: int

    name = "implicit GEMM"

    def macs(self, cin: int, cout: int) -> int:
        return self.table.size * cin * cout

    def nodes(self, cin: int) -> int:
        """Nodes the form writes (``onnx_form._implicit_gemm``): the zero row, a Gather, Reshape
        and MatMul per chunk, their Concat, the order and final gathers."""
        chunks = -(-max(len(self.table), 1) // self.chunk(cin))
        return 1 + 3 * chunks + (chunks > 1) + (self.order is not None) + \
            (self.final is not None)

    def cost(self, cin: int, cout: int) -> float:
        rows = self.num_in + len(self.table)
        return (self.macs(cin, cout) * SECONDS_PER_IMPLICIT_MAC
                + self.table.size * cin * SECONDS_PER_GATHERED_FLOAT
                + rows * max(cin, cout) * SECONDS_PER_GATHERED_FLOAT
                + self.nodes(cin) * SECONDS_PER_NODE)

    def chunk(self, cin: int, itemsize: int = 4) -> int:
        """Rows per MatMul, so that the gathered block stays under IMPLICIT_BLOCK_BYTES."""
        return max(1, IMPLICIT_BLOCK_BYTES // max(1, self.table.shape[1] * cin * itemsize))


def _orders(rb: Rulebook) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None, np.ndarray]:
    """(input order or None, input row -> ordered position, output order or None, output row ->
    ordered position). A submanifold conv's outputs are its inputs: both follow the sites'
    coordinate order; a regular conv's outputs are sorted already."""
    n, m = rb.num_in, rb.num_out
    order = None
    if rb.sorted_rows is not None and not np.array_equal(rb.sorted_rows, np.arange(n)):
        order = rb.sorted_rows.astype(np.int64)
    pos = np.arange(n, dtype=np.int64)
    if order is not None:
        pos[order] = np.arange(n, dtype=np.int64)
    out_pos = pos if rb.attrs.submanifold and m == n else np.arange(m, dtype=np.int64)
    return order, pos, (order if rb.attrs.submanifold else None), out_pos


def _tap_pairs(rb: Rulebook, pos: np.ndarray, out_pos: np.ndarray):
    """Per tap with pairs: (tap, ordered input rows, ordered output rows), by output row."""
    for k in range(len(rb.counts)):
        src, dst = rb.pairs(k)
        if len(src) == 0:
            continue
        i, o = pos[src.astype(np.int64)], out_pos[dst.astype(np.int64)]
        by_out = np.argsort(o, kind="stable")
        yield k, i[by_out], o[by_out]


def gather_sum(rb: Rulebook) -> GatherSum:
    order, pos, _, out_pos = _orders(rb)
    n, m = rb.num_in, rb.num_out
    tap_inputs, pool_out = [], []
    identity = np.arange(n, dtype=np.int64)
    for k, i, o in _tap_pairs(rb, pos, out_pos):
        tap_inputs.append((k, None if len(i) == n and np.array_equal(i, identity) else i))
        pool_out.append(o)
    outs = np.concatenate(pool_out) if pool_out else np.zeros(0, np.int64)
    by_out = np.argsort(outs, kind="stable")            # tap order within an output row
    counts = np.bincount(outs, minlength=m)
    starts = np.concatenate([[0], np.cumsum(counts)])
    groups, placed = [], []
    for w in np.unique(counts):
        rows = np.flatnonzero(counts == w)
        if w == 0:
            continue
        table = by_out[starts[rows][:, None] + np.arange(w)[None, :]].astype(np.int64)
        if w == 1 and len(rows) == len(outs) and np.array_equal(table[:, 0],
                                                                 np.arange(len(outs))):
            groups.append(None)     # the pool itself, in order: no gather
        else:
            groups.append(table[:, 0] if w == 1 else table)
        placed.append(rows)
    empty = np.flatnonzero(counts == 0)     # rows no tap reaches: a zero row after the groups
    where = np.empty(m, dtype=np.int64)
    laid = np.concatenate(placed + [empty]) if placed or len(empty) else np.zeros(0, np.int64)
    where[laid] = np.arange(len(laid))
    final = where[out_pos]
    if np.array_equal(final, np.arange(m)):
        final = None
    return GatherSum(order, tap_inputs, groups, final, len(empty), int(len(outs)), n, m)


def implicit_gemm(rb: Rulebook) -> ImplicitGemm:
    order, pos, _, out_pos = _orders(rb)
    n, m = rb.num_in, rb.num_out
    used = [k for k in range(len(rb.counts)) if rb.counts[k]]
    table = np.full((m, max(len(used), 1)), n, dtype=np.int64)
    for col, k in enumerate(used):
        src, dst = rb.pairs(k)
        table[out_pos[dst.astype(np.int64)], col] = pos[src.astype(np.int64)]
    final = out_pos if rb.attrs.submanifold and order is not None else None
    return ImplicitGemm(order, used, table, final, n)


IMPLICIT_MIN_FILL = 0.3     # below it, the implicit table is not even planned (M x K' int64;
#                             the U-Net's first SubM, 34%, and 2x2x2 down conv, 32%, run faster
#                             implicit)


def choose_form(rb: Rulebook, in_channels: int, out_channels: int, plans: dict | None = None
                ) -> tuple[GatherSum | ImplicitGemm, str]:
    """The cheaper form by the cost model above, and the reason in words for the record.
    ``plans`` caches the plans of this rulebook (layers sharing it share its tables)."""
    plans = {} if plans is None else plans
    used = max(1, int((rb.counts > 0).sum()))
    fill = rb.num_pairs / max(1, rb.num_out * used)
    if "gather-sum" not in plans:
        plans["gather-sum"] = gather_sum(rb)
    summed = plans["gather-sum"]
    if rb.attrs.submanifold and rb.attrs.kernel_volume == 1:
        return summed, "gather-sum: a pointwise conv, one MatMul of the rows in place"
    if fill < IMPLICIT_MIN_FILL:
        return summed, (f"gather-sum: {fill:.0%} of the {used} used taps' neighbours are active "
                        "(an implicit GEMM would multiply mostly zero rows)")
    if "implicit" not in plans:
        plans["implicit"] = implicit_gemm(rb)
    dense = plans["implicit"]
    a, b = dense.cost(in_channels, out_channels), summed.cost(in_channels, out_channels)
    best, other = (dense, summed) if a < b else (summed, dense)
    return best, (f"{best.name}: est. {min(a, b) * 1e3:.3g} ms vs {other.name} "
                  f"{max(a, b) * 1e3:.3g} ms ({fill:.0%} of the {used} used taps' neighbours "
                  "active)")
