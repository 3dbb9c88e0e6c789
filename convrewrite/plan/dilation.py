"""Dilation over the engine's limit: the holes written into a dense kernel, or the sub-images on
the batch axis (space-to-batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..conv import ConvSpec, dims_text
from ..decline import Decline
from ..target import Target
from .cost import LAYOUT_ELEMENT_COST_IN_MACS
from .limits import MAX_LOWERED_WEIGHTS


@dataclass(frozen=True)
class DilationPlan:
    kernel: tuple[int, ...]            # the dense kernel with the holes filled by zeros
    dilations: tuple[int, ...]         # what the conv keeps

    def mac_factor(self, spec: ConvSpec) -> float:
        dense, original = 1, 1
        for k, o in zip(self.kernel, spec.kernel_shape):
            dense, original = dense * k, original * o
        return dense / original


def plan_dilation(spec: ConvSpec, target: Target) -> DilationPlan | Decline:
    """Dilation over the limit: write the holes into the kernel as zeros (Vela's answer for
    dilation > 2). Each dimension keeps the largest legal dilation dividing its own, so a 4 on an
    engine that dilates by 2 only doubles the kernel's extent, not quadruples it."""
    limit = target.conv.max_dilation or max(spec.dilations)
    kernel, dilations = [], []
    for k, d in zip(spec.kernel_shape, spec.dilations):
        keep = max(x for x in range(1, min(d, limit) + 1) if d % x == 0)
        factor = d // keep
        kernel.append((k - 1) * factor + 1)
        dilations.append(keep)
    if tuple(dilations) == spec.dilations:
        return Decline("dilations already within the limit")
    weights = spec.out_channels * spec.in_per_group * math.prod(kernel)
    if weights > MAX_LOWERED_WEIGHTS:
        return Decline(f"a dense kernel {dims_text(kernel)} would hold {weights:,} weights "
                f"(limit {MAX_LOWERED_WEIGHTS:,})")
    return DilationPlan(tuple(kernel), tuple(dilations))


@dataclass(frozen=True)
class SpaceToBatchPlan:
    rate: tuple[int, ...]              # phases per axis (the dilation the batch absorbs)
    dilations: tuple[int, ...]         # what the conv keeps
    blocks: tuple[int, ...]            # input samples per phase and axis
    pads: tuple[int, ...]              # explicit Pad (begins, ends) so each axis is blocks*rate
    out_length: tuple[int, ...]        # the original conv's output extent

    @property
    def phases(self) -> int:
        out = 1
        for r in self.rate:
            out *= r
        return out

    def mac_factor(self, spec: ConvSpec) -> float:
        per_phase = [b - (k - 1) * d for b, k, d in
                     zip(self.blocks, spec.kernel_shape, self.dilations)]
        computed, wanted = self.phases, 1
        for p, n in zip(per_phase, self.out_length):
            computed, wanted = computed * p, wanted * n
        return computed / wanted

    def cost_factor(self, spec: ConvSpec) -> float:
        """MACs plus the two layout transposes (input and output moved once each), over the
        original's MACs."""
        if not spec.macs:
            return self.mac_factor(spec)
        batch = spec.input_shape[0] or 1
        moved = batch * self.phases * (spec.in_channels * math.prod(self.blocks)
                                       + spec.out_channels * math.prod(self.out_length)
                                       / self.phases)
        return self.mac_factor(spec) + LAYOUT_ELEMENT_COST_IN_MACS * moved / spec.macs


def _size_floor(target: Target, rank: int, axis: int) -> int | None:
    """The engine's minimum input extent on a spatial axis (height and width rules)."""
    from_end = rank - axis
    bounds = {1: target.conv.input_width, 2: target.conv.input_height}.get(from_end)
    return bounds[0] if bounds else None


def plan_space_to_batch(spec: ConvSpec, target: Target,
                        pads: tuple[int, ...]) -> SpaceToBatchPlan | Decline:
    """Dilation d as d**rank interleaved sub-images stacked on the batch axis, each convolved
    densely (TensorFlow's atrous conv; nncase's SpaceToBatch + conv + BatchToSpace): no MACs on
    zeros, at the price of a batch d**rank times larger and a few layout ops."""
    if any(s != 1 for s in spec.strides):
        return Decline("space-to-batch handles stride-1 dilated convs")
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("space-to-batch needs a static input size")
    dense = plan_dilation(spec, target)
    if isinstance(dense, Decline):
        return dense
    rank = spec.rank
    rate = tuple(d // keep for d, keep in zip(spec.dilations, dense.dilations))
    batch = (spec.input_shape[0] or 1) * math.prod(rate)
    if target.conv.max_batch is not None and batch > target.conv.max_batch:
        return Decline(f"space-to-batch makes a batch of {batch}; the engine takes "
                       f"{target.conv.max_batch}")
    blocks, begins, ends, lengths = [], [], [], []
    for i in range(rank):
        size, k, keep = spec.input_shape[2 + i], spec.kernel_shape[i], dense.dilations[i]
        out = size + pads[i] + pads[i + rank] - (k - 1) * spec.dilations[i]
        m = -(-out // rate[i]) + (k - 1) * keep
        blocks.append(m)
        low = _size_floor(target, rank, i)
        if low is not None and m < low:
            return Decline(f"space-to-batch sub-images of {m} are below the engine's minimum input "
                    f"size {low}")
        begins.append(pads[i])
        ends.append(m * rate[i] - size - pads[i])
        lengths.append(out)
    return SpaceToBatchPlan(rate, dense.dilations, tuple(blocks), tuple(begins + ends),
                            tuple(lengths))
