"""Stride over the engine's limit: run the conv at a legal stride and subsample.

nncase runs K210 convs this way (stride 1, then a strided slice). A 1x1 kernel without padding
subsamples its input instead, so it computes nothing it throws away. Same arithmetic: exact.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..legality import Violation
from ..plan import plan_stride
from ..record import Record
from .base import Pass, RewriteContext, need
from .emit import INT64_MAX, conv_copy, replace, slice_spatial
from .geometry_common import explicit_pads


def _x(values) -> str:
    return "x".join(map(str, values))


class StrideSubsample(Pass):
    name = "stride"
    fixes = frozenset({"max_stride"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        pads = need(explicit_pads(node, spec))
        plan = need(plan_stride(spec, ctx.target, pads))
        self.require_ops(ctx, ["Slice"])
        x, y, base, rank = node.inputs[0], node.outputs[0], node.name, spec.rank
        subsample_in = any(s > 1 for s in plan.input_steps)
        subsample_out = any(s > 1 for s in plan.output_steps)
        added: list[gs.Node] = []
        if subsample_in:
            x = slice_spatial(ctx, x, [0] * rank, [INT64_MAX] * rank, list(plan.input_steps),
                              f"{base}/subsample_in", added)
        conv_out = conv_copy(ctx, node, ctx.fresh(f"{base}/conv"), [x, *node.inputs[1:]], added,
                             out=None if subsample_out else y,
                             strides=list(plan.conv_strides), pads=list(pads))
        if subsample_out:
            slice_spatial(ctx, conv_out, [0] * rank, [INT64_MAX] * rank,
                          list(plan.output_steps), f"{base}/subsample_out", added, out=y)
        how = [f"conv at stride {_x(plan.conv_strides)}"]
        if subsample_in:
            how.append(f"input subsampled by {_x(plan.input_steps)}")
        if subsample_out:
            how.append(f"output subsampled by {_x(plan.output_steps)}")
        record = self.record(node, spec, violations, ", ".join(how), added, tolerance="exact",
                             macs_factor=plan.mac_factor)
        replace(node, ctx, added)
        return record
