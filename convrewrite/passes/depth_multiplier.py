"""A depthwise conv with channel multiplier m > 1 on an engine that runs depthwise convs only
with multiplier 1 (or, like Ethos-U55, only with one input channel): repeat each input channel m
times in place, then run a multiplier-1 depthwise conv over the C*m channels with the same
weight. Every output still reads one channel through the same taps, though onnxruntime's
multiplier-1 depthwise kernel may add the taps in another order than its grouped one."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..rules import Violation
from ..plan.multiplier import plan_depth_multiplier
from ..record import Record
from ..decline import need
from .protocol import Pass, RewriteContext
from .emit import conv_copy, replace, variable


class DepthMultiplierLowering(Pass):
    name = "depth_multiplier"
    fixes = frozenset({"max_depth_multiplier", "depth_multiplier_needs_single_input"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        plan = need(plan_depth_multiplier(spec, ctx.target))
        self.require_ops(ctx, ["Gather" if plan.form == "gather" else "Conv"])
        x, m, channels = node.inputs[0], spec.depth_multiplier, spec.in_channels
        source = np.repeat(np.arange(channels, dtype=np.int64), m)
        shape = None if x.shape is None else [x.shape[0], channels * m, *x.shape[2:]]
        repeated = variable(ctx, f"{node.name}/repeated", x, shape)
        added: list[gs.Node] = []
        stem = ctx.fresh(f"{node.name}/repeat")
        if plan.form == "gather":
            added.append(gs.Node("Gather", stem, {"axis": 1},
                                 [x, gs.Constant(f"{stem}.indices", source)], [repeated]))
        else:
            dtype = np.dtype(x.dtype) if x.dtype is not None else np.float32
            one_hot = np.zeros((channels * m, channels, *[1] * spec.rank), dtype=dtype)
            one_hot[(np.arange(channels * m), source, *[0] * spec.rank)] = 1
            added.append(gs.Node("Conv", stem, {"kernel_shape": [1] * spec.rank},
                                 [x, gs.Constant(f"{stem}.w", one_hot)], [repeated]))
        conv_copy(ctx, node, ctx.fresh(f"{node.name}/multiplier1"),
                  [repeated, *node.inputs[1:]], added, out=node.outputs[0], group=channels * m)
        extra = 0 if plan.form == "gather" else channels * m
        record = self.record(node, spec, violations, plan.strategy, added, tolerance="reassociating",
                             macs_factor=1 + extra / max(int(np.prod(spec.kernel_shape)), 1))
        replace(node, ctx, added)
        return record
