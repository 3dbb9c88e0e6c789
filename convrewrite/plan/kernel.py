"""Kernels larger than the engine allows: legal sub-kernels, the tile chosen by cost.
"""

from __future__ import annotations

from dataclasses import dataclass

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




def _legal_tiles(spec: ConvSpec, target: Target) -> list[tuple[int, ...]]:
    rules = target.conv
    if rules.kernel_shapes is not None:
        tiles = [k for k in rules.kernel_shapes if len(k) == spec.rank]
    else:
        tiles = [tuple(min(k, rules.max_kernel or k) for k in spec.kernel_shape)]
    if rules.max_kernel is not None:
        tiles = [t for t in tiles if max(t) <= rules.max_kernel]
    return tiles


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
