"""Grouped and depthwise convs on an engine that runs neither form: chunks of groups, each a
dense conv with a block-diagonal weight (one group per chunk: a plain conv per group), chosen by
cost in ``plan.channels.plan_group_lowering`` and emitted like a channel split. Zeros off the diagonal
add nothing, though a dense kernel may sum in another order: reassociating when dense."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..legality import Violation
from ..plan.channels import plan_group_lowering
from ..record import Record
from .protocol import Decline, Pass, RewriteContext, need
from .channel_split import emit_channel_plan, split_ops
from .emit import replace


class GroupLowering(Pass):
    name = "groups"
    fixes = frozenset({"groups"})

    def __init__(self, groups_per_conv: int | None = None):
        self.groups_per_conv = groups_per_conv      # None: by cost

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        if node.op != "Conv":
            raise Decline(f"{node.op} groups are not lowered (only Conv)")
        plan = need(plan_group_lowering(spec, ctx.target, self.groups_per_conv))
        self.require_ops(ctx, split_ops(plan, ctx))
        added = emit_channel_plan(node, spec, plan, self.weight(node), ctx)
        widest = max(t.groups for t in plan.sub_convs if t.block_diagonal) \
            if any(t.block_diagonal for t in plan.sub_convs) else 1
        tolerance = "reassociating" if widest > 1 else "exact"
        record = self.record(node, spec, violations, plan.strategy, added, tolerance=tolerance,
                             macs_factor=widest, params_after=spec.params * widest)
        replace(node, ctx, added)
        return record
