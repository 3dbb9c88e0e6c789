"""Stride over the engine's limit: a legal stride plus subsampling, or the stride folded into
channels (space-to-depth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..conv import ConvSpec
from ..decline import Decline
from ..target import Target
from .cost import LAYOUT_ELEMENT_COST_IN_MACS
from .kernel import plan_kernel_split
from .limits import missing_ops


@dataclass(frozen=True)
class StridePlan:
    conv_strides: tuple[int, ...]      # what the conv keeps
    input_steps: tuple[int, ...]       # subsample the input first (1x1 kernels without padding)
    output_steps: tuple[int, ...]      # subsample the output after

    @property
    def mac_factor(self) -> int:
        """How many more outputs the conv computes than the original (dropped by the slice)."""
        out = 1
        for step in self.output_steps:
            out *= step
        return out


def plan_stride(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> StridePlan | Decline:
    """Strides over the limit become a legal conv stride plus subsampling. A 1x1 kernel without
    padding subsamples its input (no wasted MACs); other kernels subsample their output."""
    limit = target.conv.max_stride or max(spec.strides)
    conv_strides, input_steps, output_steps = [], [], []
    for d, s in enumerate(spec.strides):
        keep = max(k for k in range(1, min(s, limit) + 1) if s % k == 0)
        step = s // keep
        conv_strides.append(keep)
        pointwise = spec.kernel_shape[d] == 1 and pads[d] == 0 and pads[d + spec.rank] == 0
        input_steps.append(step if pointwise else 1)
        output_steps.append(1 if pointwise else step)
    if tuple(conv_strides) == spec.strides:
        return Decline("strides already within the limit")
    return StridePlan(tuple(conv_strides), tuple(input_steps), tuple(output_steps))


@dataclass(frozen=True)
class SpaceToDepthPlan:
    block: int                         # the stride, folded into channels
    kernel: tuple[int, ...]            # ceil(k / s) per axis
    pads: tuple[int, ...]              # explicit Pad (begins, ends); ends may be negative: crop
    cost: float                        # over the original's MACs, kernel legalisation included
    subsample_cost: float              # what the stride-1-then-subsample form would cost


def plan_space_to_depth(spec: ConvSpec, target: Target,
                        pads: tuple[int, ...]) -> SpaceToDepthPlan | Decline:
    """A stride-s conv as SpaceToDepth(s) then a stride-1 conv with ceil(k/s) taps over s*s
    times the channels (Vela's fixup_strided_conv folds strides the same way). Against running
    at stride 1 and subsampling (s*s times the MACs), it pays s*s*ceil(k/s)**2/k**2 MACs plus
    one pass over the input; when the engine cannot run the smaller kernel, the cost of the
    kernel split that follows is included."""
    if spec.rank != 2 or len(set(spec.strides)) != 1 or spec.strides[0] == 1:
        return Decline("space-to-depth folds equal 2-D strides")
    if spec.groups != 1 or any(d != 1 for d in spec.dilations):
        return Decline("space-to-depth takes ungrouped, undilated convs")
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]) or not spec.macs:
        return Decline("space-to-depth needs a static input size")
    s = spec.strides[0]
    kernel = tuple(-(-k // s) for k in spec.kernel_shape)
    ends = []
    for axis in range(2):
        size, k = spec.input_shape[2 + axis], spec.kernel_shape[axis]
        out = (size + pads[axis] + pads[axis + 2] - k) // s + 1
        ends.append((out + kernel[axis] - 1) * s - size - pads[axis])
    folded = replace(spec, in_channels=spec.in_channels * s * s, kernel_shape=kernel,
                     strides=(1, 1), pads=(0,) * 4, auto_pad="NOTSET")
    legal = plan_kernel_split(folded, target)
    taps = math.prod(kernel)
    if not isinstance(legal, Decline):
        taps = math.prod(legal.padded_kernel)
    moved = (spec.input_shape[0] or 1) * spec.in_channels * math.prod(spec.input_shape[2:])
    cost = s * s * taps / math.prod(spec.kernel_shape) + \
        LAYOUT_ELEMENT_COST_IN_MACS * moved / spec.macs
    subsample = s * s * _kernel_factor(spec, target)
    return SpaceToDepthPlan(s, kernel, (pads[0], pads[1], *ends), cost, subsample)


def _kernel_factor(spec: ConvSpec, target: Target) -> float:
    """How many more taps the kernel split will compute for this conv on this target."""
    legal = plan_kernel_split(replace(spec, strides=(1,) * spec.rank), target)
    if isinstance(legal, Decline):
        return 1.0
    return math.prod(legal.padded_kernel) / math.prod(spec.kernel_shape)


@dataclass(frozen=True)
class StrideChoice:
    """The form the stride lowering builds: space-to-depth (``folded``) where it is usable and
    cheaper, else the legal stride and subsampling (``subsample``); ``not_chosen`` says why the
    other form lost, for the record."""

    subsample: StridePlan
    folded: SpaceToDepthPlan | None
    not_chosen: str


def choose_stride(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> StrideChoice | Decline:
    """Space-to-depth where it is usable (the target runs SpaceToDepth and Pad at stride 1, the
    weight is a constant: its taps are rearranged) and costs less than subsampling, else
    subsampling (which needs Slice)."""
    plan = plan_stride(spec, target, pads)
    if isinstance(plan, Decline):
        return plan
    folded = plan_space_to_depth(spec, target, pads)
    if not isinstance(folded, Decline) and not spec.constant_weight:
        # space-to-depth rearranges the weight's taps (needs its values); subsampling passes a
        # run-time weight on whole
        return _subsample(plan, target, "not space-to-depth: it rearranges the weight's taps, "
                                        "computed at run time")
    if isinstance(folded, Decline):
        return _subsample(plan, target, "")
    usable = target.allows_op("SpaceToDepth") and target.allows_op("Pad") and \
        (target.conv.max_stride or 1) == 1
    if usable and all(s == 1 for s in plan.input_steps) and folded.cost < folded.subsample_cost:
        return StrideChoice(plan, folded, "")
    return _subsample(plan, target, f"not space-to-depth: cost x{folded.cost:.2f} vs "
                                    f"x{folded.subsample_cost:.2f}")


def _subsample(plan: StridePlan, target: Target, not_chosen: str) -> StrideChoice | Decline:
    return missing_ops(target, ["Slice"]) or StrideChoice(plan, None, not_chosen)
