"""Grouped and depthwise convs on an engine that runs neither form: chunks of groups, each a
dense conv with a block-diagonal weight (one group per chunk: a plain conv per group), chosen by
cost in ``plan.channels.plan_group_lowering`` and emitted like a channel split. Zeros off the
diagonal add nothing, though a dense kernel may sum in another order: reassociating when dense.
An integer conv's chunks are the same op with their rows of the per-channel scales, zero points
and bias (``integer_split.IntegerTerms``), exact; block-diagonal only where the weight zero point
is 0 (else one conv per group)."""

from __future__ import annotations

from ..build.builder import Builder, ConvSite
from ..conv import INTEGER_CONVS, ConvSpec
from ..decline import Decline
from ..plan.channels import plan_group_lowering
from ..rules import rules_named
from ..target import Target
from .channel_split import channel_emit, emit_channel_plan
from .contract import Lowering, Planned, register
from .integer_split import IntegerTerms


@register
class GroupLowering(Lowering):
    name = "groups"
    fixes = rules_named("groups")

    def __init__(self, groups_per_conv: int | None = None):
        self.groups_per_conv = groups_per_conv      # None: by cost

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        if spec.op_type not in ("Conv", *INTEGER_CONVS):
            return Decline(f"{spec.op_type} groups are not lowered")
        integer = spec.op_type in INTEGER_CONVS
        per_conv = self.groups_per_conv
        if integer and spec.weight_zero_points != (0,):
            # a block-diagonal weight's off-diagonal taps would have to hold the weight zero
            # point; one conv per group needs none
            per_conv = 1
        detail = channel_emit(plan_group_lowering(spec, target, per_conv), target)
        if isinstance(detail, Decline):
            return detail
        subs = detail.plan.sub_convs
        widest = max((t.groups for t in subs if t.block_diagonal), default=1)
        strategy = detail.plan.strategy + (" (one conv per group: the weight zero point is not "
                                           "0)" if per_conv == 1 and integer else "")
        return Planned(detail, strategy,
                       "reassociating" if widest > 1 and not integer else "exact",
                       macs_factor=widest, params_after=spec.params * widest)

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        if site.spec.op_type in INTEGER_CONVS:      # chunks of whole groups: output rows only
            return emit_channel_plan(b, site, planned.detail, IntegerTerms(requantize=False))
        return emit_channel_plan(b, site, planned.detail)
