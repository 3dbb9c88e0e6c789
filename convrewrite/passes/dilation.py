"""Dilation over the engine's limit: a dense kernel with zeros in the holes.

The zeros cost MACs (the plan records how many); a space-to-batch form that costs none is the
better choice for large dilations and is not built yet. Same products, same order: exact.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..legality import Violation
from ..plan import plan_dilation
from ..record import Record
from .base import Pass, RewriteContext, need
from .emit import conv_copy, replace
from .geometry_common import explicit_pads


class DilationToDense(Pass):
    name = "dilation"
    fixes = frozenset({"max_dilation"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        pads = need(explicit_pads(node, spec))
        plan = need(plan_dilation(spec, ctx.target))
        weight = self.weight(node)
        factors = tuple(d // keep for d, keep in zip(spec.dilations, plan.dilations))
        dense = weight.respaced(plan.kernel, factors)
        name = ctx.fresh(f"{node.name}/dense")
        w, w_nodes = dense.slice(name, (slice(None),))
        added = list(w_nodes)
        conv_copy(ctx, node, name, [node.inputs[0], w, *node.inputs[2:]], added,
                  out=node.outputs[0], kernel_shape=list(plan.kernel),
                  dilations=list(plan.dilations), pads=list(pads))
        how = (f"{'x'.join(map(str, spec.kernel_shape))} dilated "
               f"{'x'.join(map(str, spec.dilations))} -> dense "
               f"{'x'.join(map(str, plan.kernel))} with zeros")
        record = self.record(node, spec, violations, how, added, tolerance="exact",
                             macs_factor=plan.mac_factor(spec),
                             params_after=int(spec.params * plan.mac_factor(spec)))
        replace(node, ctx, added)
        return record
