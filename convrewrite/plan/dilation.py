"""Dilation over the engine's limit, three forms weighed by cost (``choose_dilation``): the holes
written into a dense kernel, the sub-images on the batch axis (space-to-batch), or one 1x1 conv
per tap over a shifted view of the padded input, summed (per-tap).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ..conv import ConvSpec, dims_text
from ..decline import Decline
from ..target import Target
from .cost import (COPY_ELEMENT_COST_IN_MACS, COPY_NODE_COST_IN_MACS, LAYOUT_ELEMENT_COST_IN_MACS,
                   NODE_COST_IN_MACS, shallow_gemm_penalty)
from .limits import MAX_LOWERED_NODES, MAX_LOWERED_WEIGHTS, missing_ops

SPACE_TO_BATCH_OPS = ("Pad", "Reshape", "Transpose", "Slice")


@dataclass(frozen=True)
class DilationPlan:
    kernel: tuple[int, ...]            # the dense kernel with the holes filled by zeros
    dilations: tuple[int, ...]         # what the conv keeps

    def mac_factor(self, spec: ConvSpec) -> float:
        dense, original = 1, 1
        for k, o in zip(self.kernel, spec.kernel_shape):
            dense, original = dense * k, original * o
        return dense / original


def kept_dilations(spec: ConvSpec, target: Target) -> tuple[int, ...]:
    """Per axis the largest legal dilation dividing the conv's own."""
    limit = target.conv.max_dilation or max(spec.dilations)
    return tuple(max(x for x in range(1, min(d, limit) + 1) if d % x == 0)
                 for d in spec.dilations)


def plan_dilation(spec: ConvSpec, target: Target) -> DilationPlan | Decline:
    """Dilation over the limit: write the holes into the kernel as zeros (Vela's answer for
    dilation > 2). Each dimension keeps the largest legal dilation dividing its own, so a 4 on an
    engine that dilates by 2 only doubles the kernel's extent, not quadruples it."""
    dilations = kept_dilations(spec, target)
    kernel = [(k - 1) * (d // keep) + 1
              for k, d, keep in zip(spec.kernel_shape, spec.dilations, dilations)]
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
    kept = kept_dilations(spec, target)
    if kept == spec.dilations:
        return Decline("dilations already within the limit")
    rank = spec.rank
    rate = tuple(d // keep for d, keep in zip(spec.dilations, kept))
    batch = (spec.input_shape[0] or 1) * math.prod(rate)
    if target.conv.max_batch is not None and batch > target.conv.max_batch:
        return Decline(f"space-to-batch makes a batch of {batch}; the engine takes "
                       f"{target.conv.max_batch}")
    blocks, begins, ends, lengths = [], [], [], []
    for i in range(rank):
        size, k, keep = spec.input_shape[2 + i], spec.kernel_shape[i], kept[i]
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
    return SpaceToBatchPlan(rate, kept, tuple(blocks), tuple(begins + ends),
                            tuple(lengths))


@dataclass(frozen=True)
class PerTapPlan:
    """Each tap of the kernel as a 1x1 conv over the view of the padded input it reads (a
    strided Slice: the conv's stride goes into the view's step), the partial outputs summed."""

    pads: tuple[int, ...]                       # explicit Pad of the input first
    taps: tuple[tuple[int, ...], ...]           # kernel index per tap
    starts: tuple[tuple[int, ...], ...]         # per tap and axis: the view's first input
    out_length: tuple[int, ...]                 # the conv's output extent

    def ends(self, spec: ConvSpec, start: tuple[int, ...]) -> list[int]:
        return [a + (n - 1) * s + 1 for a, n, s in zip(start, self.out_length, spec.strides)]

    def cost_factor(self, spec: ConvSpec) -> float:
        """MACs (x1, at the 1x1 GEMM depth of one tap), plus a Slice per tap and the Adds, over
        the original's MACs (costs of plan.cost)."""
        if not spec.macs:
            return 1.0
        batch, taps = spec.input_shape[0] or 1, len(self.taps)
        positions = batch * math.prod(self.out_length)
        penalty = shallow_gemm_penalty(spec.in_per_group, (1,) * spec.rank) / \
            shallow_gemm_penalty(spec.in_per_group * taps, spec.kernel_shape)
        copies = (taps * spec.in_channels + (taps - 1) * spec.out_channels) * positions \
            * COPY_ELEMENT_COST_IN_MACS + (2 * taps - 1) * COPY_NODE_COST_IN_MACS
        return penalty + (copies + (taps - 1) * NODE_COST_IN_MACS) / spec.macs


def plan_per_tap(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> PerTapPlan | Decline:
    """Any dilation, any stride: a tap of a dilated kernel reads the padded input at offset
    i * d and every s-th sample after, so it is a 1x1 conv of that view. No MAC touches a zero
    and no kernel grows; the price is a Slice per tap and the Adds that sum them."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("the per-tap form needs a static input size")
    rank = spec.rank
    lengths = []
    for i in range(rank):
        span = spec.input_shape[2 + i] + pads[i] + pads[i + rank] - spec.dilated_kernel[i]
        if span < 0:
            return Decline("the dilated kernel is larger than the padded input")
        lengths.append(span // spec.strides[i] + 1)
    taps = tuple(itertools.product(*(range(k) for k in spec.kernel_shape)))
    if 2 * len(taps) > MAX_LOWERED_NODES:
        return Decline(f"{len(taps)} taps would make {2 * len(taps)} nodes "
                       f"(limit {MAX_LOWERED_NODES})")
    missing = missing_ops(target, ["Conv", "Slice"] + (["Add"] if len(taps) > 1 else [])
                          + (["Pad"] if any(pads) else []))
    if missing:
        return missing
    starts = tuple(tuple(t * d for t, d in zip(tap, spec.dilations)) for tap in taps)
    return PerTapPlan(tuple(pads), taps, starts, tuple(lengths))


@dataclass(frozen=True)
class DilationChoice:
    form: str                       # "dense" | "space_to_batch" | "per_tap"
    plan: object                    # DilationPlan | SpaceToBatchPlan | PerTapPlan
    cost: float                     # cost over the original's MACs
    why: str                        # every other form, with its cost or its reason


FORMS = ("dense", "space_to_batch", "per_tap")
FORM_NAMES = {"dense": "dense", "space_to_batch": "space-to-batch", "per_tap": "per-tap"}


def choose_dilation(spec: ConvSpec, target: Target,
                    pads: tuple[int, ...]) -> DilationChoice | Decline:
    """The cheapest of the three forms that can be built, and for each other form its cost or
    why it cannot be (so no form declines silently). The dense form writes the taps into a
    larger kernel: not for a weight known only at run time (the other two leave it whole or
    slice it)."""
    if all(d <= (target.conv.max_dilation or d) for d in spec.dilations):
        return Decline("dilations already within the limit")
    built, reasons = {}, {}
    dense = plan_dilation(spec, target) if spec.constant_weight else \
        Decline("its kernel needs the weight's values; it is computed at run time")
    if isinstance(dense, Decline):
        reasons["dense"] = dense.reason
    else:
        built["dense"] = (dense, dense.mac_factor(spec))
    batched = plan_space_to_batch(spec, target, pads)
    if not isinstance(batched, Decline):
        batched = missing_ops(target, SPACE_TO_BATCH_OPS) or batched
    if isinstance(batched, Decline):
        reasons["space_to_batch"] = batched.reason
    else:
        built["space_to_batch"] = (batched, batched.cost_factor(spec))
    taps = plan_per_tap(spec, target, pads)
    if isinstance(taps, Decline):
        reasons["per_tap"] = taps.reason
    else:
        built["per_tap"] = (taps, taps.cost_factor(spec))
    if not built:
        return Decline("; ".join(f"{FORM_NAMES[f]}: {reasons[f]}" for f in FORMS))
    form = min(built, key=lambda f: (built[f][1], FORMS.index(f)))
    plan, cost = built[form]
    others = [f"{FORM_NAMES[f]} x{built[f][1]:.2f}" if f in built else
              f"{FORM_NAMES[f]}: {reasons[f]}" for f in FORMS if f != form]
    return DilationChoice(form, plan, cost, f"cost x{cost:.2f} vs " + "; ".join(others))
