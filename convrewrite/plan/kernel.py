"""Kernels larger than the engine allows: legal sub-kernels, the tile chosen by cost.

A sub-kernel is legal when its taps (``max_kernel``, ``kernel_shapes``) and its *dilated* extent
(``max_dilated_kernel_height``, ``max_dilated_kernel_area``: dilation * (taps - 1) + 1, at the
conv's own dilation) meet the target's rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ..conv import ConvSpec
from ..decline import Decline
from ..target import Target
from .cost import NODE_COST_IN_TAPS
from .limits import MAX_LOWERED_NODES
from .windows import AxisCut, cut_axis


@dataclass(frozen=True)
class KernelPlan:
    tile: tuple[int, ...]              # the legal sub-kernel
    pieces: tuple[int, ...]            # sub-kernels per spatial dim
    cost: int                          # taps computed + node overhead, the chooser's score
    alternatives: tuple[tuple[tuple[int, ...], int], ...]   # (tile, cost) of the others

    @property
    def padded_kernel(self) -> tuple[int, ...]:
        return tuple(t * p for t, p in zip(self.tile, self.pieces))


def dilated_extent(tile: int, dilation: int) -> int:
    """What a kernel of ``tile`` taps at ``dilation`` spans: the extent the engine measures."""
    return dilation * (tile - 1) + 1


def _fits(tile: tuple[int, ...], spec: ConvSpec, rules) -> bool:
    """Whether a sub-kernel ``tile`` (at the conv's own dilation) meets the kernel rules."""
    extents = [dilated_extent(t, d) for t, d in zip(tile, spec.dilations)]
    if rules.max_kernel is not None and max(tile) > rules.max_kernel:
        return False
    if rules.max_dilated_kernel_height is not None and spec.rank >= 2 and \
            extents[-2] > rules.max_dilated_kernel_height:
        return False
    return rules.max_dilated_kernel_area is None or prod(extents) <= rules.max_dilated_kernel_area


def _largest_taps(limit: int, dilation: int) -> int:
    """The most taps whose dilated extent stays within ``limit`` (at least one)."""
    return max(1, (limit - 1) // dilation + 1)


def _axis_bounds(spec: ConvSpec, rules) -> list[int]:
    """Per axis, the largest tile the per-axis limits allow (the kernel extent, max_kernel and,
    on the height axis, the dilated height)."""
    bounds = []
    for axis, (k, d) in enumerate(zip(spec.kernel_shape, spec.dilations)):
        t = min(k, rules.max_kernel or k)
        if rules.max_dilated_kernel_height is not None and spec.rank >= 2 and \
                axis == spec.rank - 2:
            t = min(t, _largest_taps(rules.max_dilated_kernel_height, d))
        bounds.append(t)
    return bounds


def _maximal_tiles(spec: ConvSpec, rules) -> list[tuple[int, ...]]:
    """The tiles no axis of which can grow within the limits: one (the per-axis bounds) unless
    the dilated area binds, then the area's frontier (each leading extent, the last axis as large
    as the remaining area lets it be)."""
    bounds, area = _axis_bounds(spec, rules), rules.max_dilated_kernel_area
    if area is None or _fits(tuple(bounds), spec, rules):
        return [tuple(bounds)]
    tiles = []

    def extend(prefix: tuple[int, ...], used: int) -> None:
        axis = len(prefix)
        d = spec.dilations[axis]
        if axis == spec.rank - 1:       # used <= area: one tap always fits
            tiles.append((*prefix, min(bounds[axis], _largest_taps(area // used, d))))
            return
        for t in range(1, bounds[axis] + 1):
            extent = used * dilated_extent(t, d)
            if extent > area:
                break
            extend((*prefix, t), extent)

    extend((), 1)
    return [t for t in tiles if not any(
        t[a] < bounds[a] and _fits(t[:a] + (t[a] + 1,) + t[a + 1:], spec, rules)
        for a in range(spec.rank))]


def _balanced(tile: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[int, ...]:
    """The smallest tile that covers ``kernel`` in as many pieces as ``tile`` does: fewer zero
    taps, and legal wherever ``tile`` is (every limit is an upper bound)."""
    return tuple(-(-k // -(-k // t)) for k, t in zip(kernel, tile))


def _legal_tiles(spec: ConvSpec, target: Target) -> list[tuple[int, ...]]:
    rules = target.conv
    if rules.kernel_shapes is not None:
        return [k for k in rules.kernel_shapes if len(k) == spec.rank and _fits(k, spec, rules)]
    tiles = _maximal_tiles(spec, rules)
    return list(dict.fromkeys(tiles + [_balanced(t, spec.kernel_shape) for t in tiles]))


def plan_kernel_split(spec: ConvSpec, target: Target) -> KernelPlan | Decline:
    """Cover the kernel with legal sub-kernels (zero-padding it to a multiple of the tile), each
    applied to a shifted view of the input and summed. The tile is chosen by cost: kernel taps
    computed (zeros included) plus a fixed cost per sub-conv."""
    tiles = _legal_tiles(spec, target)
    if not tiles:
        return Decline(f"the target allows no {spec.rank}-D kernel shape to build from")
    scored = []
    for tile in tiles:
        pieces = tuple(-(-k // t) for k, t in zip(spec.kernel_shape, tile))
        count = 1
        taps = 1
        for t, p in zip(tile, pieces):
            count *= p
            taps *= t * p
        scored.append((taps + NODE_COST_IN_TAPS * count, count, tile, pieces))
    scored.sort()
    cost, count, tile, pieces = scored[0]
    if pieces == (1,) * spec.rank and tile == spec.kernel_shape:
        return Decline("kernel already legal")
    if count > MAX_LOWERED_NODES:
        return Decline(f"{count} sub-kernels would be needed (limit {MAX_LOWERED_NODES})")
    others = tuple((t, c) for c, _, t, _ in scored[1:])
    return KernelPlan(tile, pieces, cost, others)


def view_cuts(spec: ConvSpec, plan: KernelPlan,
              pads: tuple[int, ...]) -> tuple[tuple[int, AxisCut], ...] | Decline:
    """Where the target has no Slice: the sub-kernels' shifted views of the padded input as
    Split + Concat windows (``plan.windows``), per spatial axis cut into more than one piece.
    Piece i of an axis reads [i * tile * dilation, padded - (pieces - 1 - i) * tile * dilation)."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("cutting the shifted views by Split needs a static input size")
    rank, cuts = spec.rank, []
    for axis, (t, p, k, d) in enumerate(zip(plan.tile, plan.pieces, spec.kernel_shape,
                                            spec.dilations)):
        if p == 1:
            continue
        padded = spec.input_shape[2 + axis] + pads[axis] + pads[axis + rank] + (t * p - k) * d
        spans = [(i * t * d, padded - (p - 1 - i) * t * d) for i in range(p)]
        cuts.append((axis, cut_axis(spans, padded)))
    return tuple(cuts)
