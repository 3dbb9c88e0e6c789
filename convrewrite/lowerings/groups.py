"""Grouped and depthwise convs on an engine that runs neither form: chunks of groups, each a
dense conv with a block-diagonal weight (one group per chunk: a plain conv per group), chosen by
cost in ``plan.channels.plan_group_lowering`` and emitted like a channel split. Zeros off the
diagonal add nothing, though a dense kernel may sum in another order: reassociating when dense."""

from __future__ import annotations

from ..build.builder import Builder, ConvSite
from ..conv import ConvSpec
from ..decline import Decline
from ..plan.channels import plan_group_lowering
from ..rules import rules_named
from ..target import Target
from .channel_split import channel_emit, emit_channel_plan
from .contract import Lowering, Planned, register


@register
class GroupLowering(Lowering):
    name = "groups"
    fixes = rules_named("groups")

    def __init__(self, groups_per_conv: int | None = None):
        self.groups_per_conv = groups_per_conv      # None: by cost

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        if spec.op_type != "Conv":
            return Decline(f"{spec.op_type} groups are not lowered (only Conv)")
        detail = channel_emit(plan_group_lowering(spec, target, self.groups_per_conv), target)
        if isinstance(detail, Decline):
            return detail
        subs = detail.plan.sub_convs
        widest = max((t.groups for t in subs if t.block_diagonal), default=1)
        return Planned(detail, detail.plan.strategy,
                       "reassociating" if widest > 1 else "exact",
                       macs_factor=widest, params_after=spec.params * widest)

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        return emit_channel_plan(b, site, planned.detail)
