"""Taps that only ever read zero padding are dropped before any geometry lowering.

Segmentation nets run dilated convs on small maps (DeepLab's ASPP: rates 12/24/36 on 8x8 at low
resolution), where most taps fall in the padding for every output. Lowering those taps as written
would build 73x73 dense kernels; dropping them is exact and usually leaves a 1x1 or 3x3 conv."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..conv import ConvSpec, dims_text
from ..rules import Violation
from ..plan.dead_taps import plan_dead_taps
from ..record import Record
from ..decline import Decline, Declined, need
from .protocol import Pass, RewriteContext
from .emit import conv_copy, replace
from .geometry_common import explicit_pads

GEOMETRY_RULES = frozenset({"max_dilation", "kernel_shapes", "max_kernel", "max_pad",
                            "max_dilated_kernel_height", "max_dilated_kernel_area",
                            "same_pad_only", "symmetric_pad"})


class DeadTaps(Pass):
    name = "dead_taps"
    fixes = GEOMETRY_RULES

    def takes(self, spec: ConvSpec, target) -> bool:
        if spec.op_type != "Conv" or spec.auto_pad not in ("NOTSET", "") or spec.pads is None:
            return False
        return not isinstance(plan_dead_taps(spec, spec.pads), Decline)

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        if node.op != "Conv":
            raise Declined(f"{node.op} taps are not trimmed")
        pads = need(explicit_pads(node, spec))
        plan = need(plan_dead_taps(spec, pads))
        stem = ctx.fresh(f"{node.name}/trimmed")
        index = (slice(None), slice(None), *(slice(a, b + 1) for a, b in plan.taps))
        w, w_nodes = self.weight(node, ctx.opset).slice(stem, index)
        added = list(w_nodes)
        dilations = [d if k > 1 else 1 for d, k in zip(spec.dilations, plan.kernel)]
        conv_copy(ctx, node, stem, [node.inputs[0], w, *node.inputs[2:]], added,
                  out=node.outputs[0], kernel_shape=list(plan.kernel), pads=list(plan.pads),
                  dilations=dilations)
        kept = 1
        for k in plan.kernel:
            kept *= k
        total = 1
        for k in spec.kernel_shape:
            total *= k
        how = (f"{dims_text(spec.kernel_shape)} -> {dims_text(plan.kernel)}: "
               f"taps that only read padding dropped")
        record = self.record(node, spec, violations, how, added, tolerance="exact",
                             macs_factor=kept / total, params_after=spec.params * kept // total)
        record.rules = [v for v in violations if v.rule in self.fixes]
        replace(node, ctx, added)
        return record
