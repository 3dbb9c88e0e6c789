"""The rulebook of a sparse convolution: which input site feeds which output site through which
kernel tap, built with vectorised numpy (sort + searchsorted over linearised coordinates) in
memory proportional to the active sites, never to the grid.

Coordinates become int64 keys: (batch, spatial...) linearised row-major over the grid widened by a
margin on each side. For a submanifold conv the margin is the kernel's reach, so a neighbour query
is ``key + delta[tap]`` for every site at once -- a neighbour off the grid lands on a key no input
site can have, so no bounds test is needed -- and one ``searchsorted`` of those (already sorted)
queries per tap finds the pairs. Taps come in mirror pairs (tap t and K-1-t swap input and
output), so only half of them are searched, as spconv does. A regular conv's candidate output sites
are every (site, tap) whose ``coordinate + pad - tap * dilation`` divides by the stride and lands on
the output grid; the distinct ones, sorted, are the output sites.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from ..ops.sparse_conv import COORD_DTYPES, SparseConvAttrs, SparseConvError

KEY_LIMIT = 2 ** 62         # linearised keys stay well inside int64


@dataclass
class Rulebook:
    """Input/output index pairs per kernel tap, and the output sites.

    ``in_index[offsets[k]:offsets[k + 1]]`` and ``out_index[...]`` are tap k's pairs: output row
    ``out_index[j]`` receives ``W_k @ features[in_index[j]]``. Within one tap no output row repeats,
    so a scatter-add per tap never adds twice into a row (no races, any thread count)."""

    attrs: SparseConvAttrs
    num_in: int
    out_coords: np.ndarray          # [M, 1 + D], the coordinates' dtype
    in_index: np.ndarray            # [P]
    out_index: np.ndarray           # [P]
    offsets: np.ndarray             # [K + 1]
    sorted_rows: np.ndarray | None = None   # output rows by ascending coordinate (None: in order)

    @property
    def num_out(self) -> int:
        return len(self.out_coords)

    @property
    def num_pairs(self) -> int:
        return len(self.in_index)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def identity_tap(self) -> int | None:
        """Submanifold: the centre tap maps every site onto itself, in order."""
        return self.attrs.centre_tap

    def pairs(self, tap: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets[tap], self.offsets[tap + 1]
        return self.in_index[lo:hi], self.out_index[lo:hi]

    def macs(self, in_channels: int, out_channels: int) -> int:
        return self.num_pairs * in_channels * out_channels

    def describe(self) -> str:
        return (f"{self.attrs.kernel_volume} taps, {self.num_pairs} pairs, {self.num_in} -> "
                f"{self.num_out} sites")


def check_coordinates(coords, attrs: SparseConvAttrs) -> np.ndarray:
    """The coordinates as int64 [N, 1 + D], or a SparseConvError naming the first bad row."""
    c = np.asarray(coords)
    if c.dtype not in COORD_DTYPES:
        raise SparseConvError(f"SparseConv coordinates must be int32 or int64, got {c.dtype}")
    rank = attrs.rank
    if c.ndim != 2 or c.shape[1] != 1 + rank:
        raise SparseConvError(f"SparseConv coordinates: expected [N, {1 + rank}] (batch index, then "
                              f"{rank} spatial), got {list(c.shape)}")
    c = c.astype(np.int64, copy=False)
    if len(c) == 0:
        return c
    limits = np.array((np.iinfo(np.int64).max, *attrs.spatial_shape), dtype=np.int64)
    bad = (c < 0) | (c >= limits)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        dim = int(np.flatnonzero(bad[row])[0])
        what = "batch index" if dim == 0 else \
            f"spatial dim {dim - 1} (extent {attrs.spatial_shape[dim - 1]})"
        raise SparseConvError(f"SparseConv coordinates row {row} {tuple(c[row].tolist())}: "
                              f"{what} out of range (spatial_shape {list(attrs.spatial_shape)})")
    return c


def _row_major_strides(extents) -> np.ndarray:
    strides = np.ones(len(extents), dtype=np.int64)
    for i in range(len(extents) - 2, -1, -1):
        strides[i] = strides[i + 1] * extents[i + 1]
    return strides


def _keys(c: np.ndarray, extents, margins) -> tuple[np.ndarray, np.ndarray]:
    """(keys, strides): (batch, spatial + margin) linearised row-major over ``extents``."""
    batches = int(c[:, 0].max()) + 1 if len(c) else 1
    if batches * prod(extents) >= KEY_LIMIT:
        raise SparseConvError(f"SparseConv grid too large to index: {batches} batches x "
                              f"{list(extents)}")
    strides = _row_major_strides((batches, *extents))
    keys = c[:, 0] * strides[0]
    for i, m in enumerate(margins):
        keys = keys + (c[:, 1 + i] + m) * strides[1 + i]
    return keys, strides


def _sorted_unique(keys: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, keys[order]); duplicate sites are an error naming both rows."""
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    same = np.flatnonzero(skeys[1:] == skeys[:-1])
    if len(same):
        a, b = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        raise SparseConvError(f"SparseConv coordinates rows {a} and {b} are the same site "
                              f"{tuple(c[a].tolist())}; each active site must appear once")
    return order, skeys


def _unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, index of each value among them); np.unique's own inverse is far
    slower here (measured 0.7 s for 1.35M int64 keys against 0.04 s)."""
    order = np.argsort(values)
    ordered = values[order]
    new = np.empty(len(values), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    inverse = np.empty(len(values), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


def _index_dtype(n: int) -> type:
    return np.int32 if n < 2 ** 31 else np.int64


def build_rulebook(coords, attrs: SparseConvAttrs) -> Rulebook:
    """The rulebook of ``attrs`` on these coordinates (validated: dtype, shape, range, duplicates)."""
    c = check_coordinates(coords, attrs)
    out_dtype = np.asarray(coords).dtype
    if attrs.submanifold:
        return _submanifold(c, attrs, out_dtype)
    return _regular(c, attrs, out_dtype)


def _assemble(attrs, num_in, out_coords, ins: list, outs: list, dtype) -> Rulebook:
    counts = np.array([len(i) for i in ins], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    cat = (lambda xs: np.concatenate(xs).astype(dtype, copy=False)) if ins else \
        (lambda xs: np.zeros(0, dtype))
    return Rulebook(attrs, num_in, out_coords, cat(ins), cat(outs), offsets)


def _submanifold(c: np.ndarray, attrs: SparseConvAttrs, out_dtype) -> Rulebook:
    n = len(c)
    margins = [(k // 2) * d for k, d in zip(attrs.kernel_shape, attrs.dilations)]
    extents = [s + 2 * m for s, m in zip(attrs.spatial_shape, margins)]
    keys, strides = _keys(c, extents, margins)
    order, skeys = _sorted_unique(keys, c)
    dtype = _index_dtype(n)
    order = order.astype(dtype)
    taps = attrs.taps()
    centre = np.asarray([k // 2 for k in attrs.kernel_shape])
    deltas = ((taps - centre) * np.asarray(attrs.dilations)) @ strides[1:]
    kv, k_last, d_last = attrs.kernel_volume, attrs.kernel_shape[-1], attrs.dilations[-1]
    ins: list = [None] * kv
    outs: list = [None] * kv
    ins[kv // 2] = outs[kv // 2] = np.arange(n, dtype=dtype)
    # Output j (sorted position) reads the input at skeys[j] + deltas[t]; tap K-1-t is tap t's
    # mirror. Taps come in rows along the last dim; with dilation 1 there, a row's keys are
    # consecutive integers, so one searchsorted finds the first and each next one is at most
    # one sorted position further: pos advances by one on every hit.
    pos = None
    for t in range(kv // 2):
        query = skeys + deltas[t]
        if pos is None or d_last != 1 or t % k_last == 0:
            pos = np.searchsorted(skeys, query)
        at = np.minimum(pos, n - 1)
        hit = skeys[at] == query
        j = np.flatnonzero(hit)
        i = at[j]
        ins[t], outs[t] = order[i], order[j]
        ins[kv - 1 - t], outs[kv - 1 - t] = order[j], order[i]
        pos += hit
    rb = _assemble(attrs, n, c.astype(out_dtype, copy=False), ins, outs, dtype)
    rb.sorted_rows = order
    return rb


def _regular(c: np.ndarray, attrs: SparseConvAttrs, out_dtype) -> Rulebook:
    n, rank = len(c), attrs.rank
    out_shape = attrs.out_spatial_shape
    keys, _ = _keys(c, attrs.spatial_shape, [0] * rank)
    order, _ = _sorted_unique(keys, c)
    c = c[order]            # sorted sites: each tap's candidate output keys come out sorted
    batches = int(c[:, 0].max()) + 1 if n else 1
    out_strides = _row_major_strides((batches, *out_shape))
    if batches * prod(out_shape) >= KEY_LIMIT:
        raise SparseConvError(f"SparseConv output grid too large to index: {list(out_shape)}")
    # per spatial dim and per tap index along it: which sites reach the output grid, and where
    valid = np.ones((1, n), dtype=bool)
    okey = (c[:, 0] * out_strides[0])[None, :]
    for i in range(rank):
        k, s, d, p = attrs.kernel_shape[i], attrs.strides[i], attrs.dilations[i], attrs.pads[i]
        num = c[None, :, 1 + i] + (p - d * np.arange(k))[:, None]          # [k, N]
        q, r = np.divmod(num, s) if s > 1 else (num, None)
        ok = (num >= 0) & (q < out_shape[i])
        if r is not None:
            ok &= r == 0
        taps = len(valid) * k                                              # row-major
        valid = (valid[:, None, :] & ok[None, :, :]).reshape(taps, n)
        okey = (okey[:, None, :] + q[None, :, :] * out_strides[1 + i]).reshape(taps, n)
    counts = valid.sum(axis=1)
    flat = valid.reshape(-1)
    cand = okey.reshape(-1)[flat]
    src = np.broadcast_to(order, valid.shape).reshape(-1)[flat]
    uniq, dst = _unique_inverse(cand)
    dtype = _index_dtype(max(n, len(uniq)))
    dst = dst.astype(dtype, copy=False)
    out = np.empty((len(uniq), 1 + rank), dtype=np.int64)
    rem = uniq
    for i, st in enumerate(out_strides):
        out[:, i], rem = np.divmod(rem, st)
    splits = np.cumsum(counts)[:-1]
    return _assemble(attrs, n, out.astype(out_dtype), np.split(src, splits), np.split(dst, splits),
                     dtype)
