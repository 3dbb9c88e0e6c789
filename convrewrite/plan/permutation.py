"""Element permutations as merged-axis transposes: the index map a data-movement region was
probed to compute (output element -> flat index of the input element it copies) is factored into
the fewest axes that move together, so it runs as Reshape -> Transpose -> Reshape; where that
Transpose needs more axes than the target has, as a chain of block swaps each of at most its rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from math import prod

import numpy as np


MAX_SEARCHED = 8           # axes: a search for two Transposes tries every middle order (8! = 40320)


@dataclass(frozen=True)
class Transposes:
    """``x`` viewed as ``views[k]`` then transposed by ``perms[k]``, step after step; the last
    step's result, read in order, is the output."""

    views: tuple[tuple[int, ...], ...]
    perms: tuple[tuple[int, ...], ...]

    @property
    def rank(self) -> int:
        return max((len(v) for v in self.views), default=0)


def strided_axes(index: np.ndarray) -> tuple[int, list[tuple[int, int]]] | None:
    """(offset, axes): (size, stride in the input) of each merged axis, outermost output axis
    first, such that ``index[o] = offset + sum(digit_k(o) * stride_k)``; None when no such
    axes exist. Axes of size 1 vanish; adjacent axes that move together are one: a run of
    consecutive outputs stepping by one stride is one axis, greedily, which is minimal since
    two axes adjacent on both sides would have formed one run."""
    flat = np.asarray(index, dtype=np.int64).reshape(-1)
    if flat.size == 0:
        return None
    axes, current = [], flat
    while current.size > 1:
        stride = int(current[1] - current[0])
        breaks = np.flatnonzero(np.diff(current) != stride)
        run = int(breaks[0]) + 1 if breaks.size else current.size
        if current.size % run:
            return None
        blocks = current.reshape(-1, run)
        if not np.array_equal(blocks, blocks[:, :1] + np.arange(run, dtype=np.int64) * stride):
            return None
        axes.append((run, stride))
        current = blocks[:, 0]
    axes.reverse()
    return int(flat[0]), axes


def merged_axes(index: np.ndarray) -> list[tuple[int, int]] | None:
    """``strided_axes`` of a permutation of axes (offset 0, the strides tiling the input
    contiguously); None for a selection, a flip, a duplicate."""
    parts = strided_axes(index)
    if parts is None or parts[0] != 0:
        return None
    axes = parts[1]
    expected = 1
    for size, stride in sorted(axes, key=lambda a: a[1]):
        if stride != expected:
            return None
        expected *= size
    return axes if expected == index.size else None


def strided_box(index: np.ndarray, total: int) -> tuple[list[int], list[int], list[int]] | None:
    """(view, starts, ends): the input viewed so that ``index``'s elements are one box of it
    (Slice with step 1), each merged axis of the map one axis of the view, reaching up to the
    next larger stride (an innermost axis below the smallest, sliced to one position); None
    when the map is no strided box (a flip, a duplicate, strides that do not nest)."""
    parts = strided_axes(index)
    if parts is None:
        return None
    offset, axes = parts
    strides = sorted(stride for _, stride in axes)
    if any(s <= 0 for s in strides) or len(set(strides)) < len(strides):
        return None
    sizes = {stride: size for size, stride in axes}
    units = ([1] if not strides or strides[0] > 1 else []) + strides     # inner first
    view, starts, ends, rest = [], [], [], offset
    for k, unit in enumerate(units):
        outer = units[k + 1] if k + 1 < len(units) else total
        if outer % unit:
            return None
        extent = outer // unit
        start, rest = rest % extent, rest // extent
        stop = start + sizes.get(unit, 1)
        if stop > extent:
            return None
        view.append(extent)
        starts.append(start)
        ends.append(stop)
    if rest:
        return None
    return view[::-1], starts[::-1], ends[::-1]


def plan_transposes(index: np.ndarray, max_rank: int | None) -> Transposes | None:
    """The permutation ``index`` (see ``merged_axes``) as transposes over views of at most
    ``max_rank`` axes: one over the merged axes when they fit, else two when some middle order
    allows, else block swaps; None when it is no permutation of axes or a swap would not fit."""
    axes = merged_axes(index)
    if axes is None:
        return None
    source = sorted(range(len(axes)), key=lambda k: -axes[k][1])    # input order, outermost first
    sizes = [axes[k][0] for k in source]
    perm = tuple(source.index(k) for k in range(len(axes)))
    if max_rank is None or len(axes) <= max_rank:
        return Transposes((tuple(sizes),), (perm,))
    pair = _two_transposes(sizes, perm, max_rank) if len(axes) <= MAX_SEARCHED else None
    return pair or _block_swaps(sizes, perm, max_rank)


def _runs(before: tuple, after: tuple) -> list[tuple]:
    """``before`` cut where its next axis does not follow in ``after``: the fewest blocks one
    Transpose moves to make ``after`` from ``before`` (its view's rank is their count)."""
    where = {a: k for k, a in enumerate(after)}
    runs = [[before[0]]]
    for a in before[1:]:
        if where[a] == where[runs[-1][-1]] + 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    return [tuple(r) for r in runs]


def _step(sizes, before: tuple, after: tuple) -> tuple[tuple, tuple]:
    """(view, perm) of the one Transpose making ``after`` from ``before``."""
    runs = _runs(before, after)
    view = tuple(prod(sizes[a] for a in run) for run in runs)
    where = {a: k for k, a in enumerate(after)}
    return view, tuple(sorted(range(len(runs)), key=lambda r: where[runs[r][0]]))


def _two_transposes(sizes, perm, max_rank: int) -> Transposes | None:
    """Two Transposes through the middle order that keeps both views smallest, if one exists
    (every order of at most MAX_SEARCHED axes is tried)."""
    start, best = tuple(range(len(perm))), None
    for middle in permutations(start):
        first, second = len(_runs(start, middle)), len(_runs(middle, perm))
        if first <= max_rank and second <= max_rank and \
                (best is None or (max(first, second), first + second) < best[0]):
            best = ((max(first, second), first + second), middle)
    if best is None:
        return None
    middle = best[1]
    steps = [_step(sizes, start, middle), _step([sizes[a] for a in middle],
                                                 tuple(range(len(perm))),
                                                 tuple(middle.index(a) for a in perm))]
    return Transposes(tuple(v for v, _ in steps), tuple(p for _, p in steps))


def _block_swaps(sizes, perm, max_rank: int) -> Transposes | None:
    """The input axes still out of place moved next to those already placed, each swap a
    [before, a, b, after] view: at most one Transpose per axis."""
    views, perms, order, i = [], [], list(range(len(perm))), 0
    while i < len(order):
        if order[i] == perm[i]:
            i += 1
            continue
        j = order.index(perm[i])
        run = 1
        while j + run < len(order) and i + run < len(order) and order[j + run] == perm[i + run]:
            run += 1
        parts = [order[:i], order[i:j], order[j:j + run], order[j + run:]]
        view = [prod(sizes[a] for a in part) for part in parts]
        keep = [k for k, extent in enumerate(view) if extent > 1 or k in (1, 2)]
        views.append(tuple(view[k] for k in keep))
        swapped = [0, 2, 1, 3]
        perms.append(tuple(keep.index(swapped[k]) for k in keep))
        order = parts[0] + parts[2] + parts[1] + parts[3]
        i += run
    plan = Transposes(tuple(views), tuple(perms))
    return plan if plan.rank <= max_rank else None
