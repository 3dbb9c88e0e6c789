"""A registered lowering (``lowerings``) run on one ONNX conv node: plan it, build the replacement
with the ONNX Builder, record it, put it in the graph."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..build.builder import ConvSite
from ..build.onnx import OnnxBuilder
from ..conv import ConvSpec
from ..decline import need
from ..lowerings import Lowering
from ..record import Record
from ..rules import Violation
from .emit import replace
from .protocol import Pass, RewriteContext


def onnx_site(node: gs.Node, spec: ConvSpec, weight) -> ConvSite:
    bias = node.inputs[2] if spec.has_bias else None
    return ConvSite(node.name, spec, node.inputs[0], node.outputs[0], weight, bias,
                    dict(node.attrs))


class OnnxLowering(Pass):
    """The conv-pass face of a lowering: the pipeline's fixpoint runs it like any conv pass."""

    def __init__(self, lowering: Lowering):
        self.lowering = lowering
        self.name = lowering.name
        self.fixes = lowering.fixes

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        planned = need(self.lowering.plan(spec, ctx.target))
        site = onnx_site(node, spec, self.weight(node))
        b = OnnxBuilder(ctx.fresh, node.name, opset=ctx.opset, regroupable=ctx.regroupable_sums)
        self.lowering.emit(b, site, planned)
        record = self.record(node, spec, violations, planned.rewrite, b.nodes, planned.tolerance,
                             macs_factor=planned.macs_factor, params_after=planned.params_after)
        replace(node, ctx, b.nodes)
        return record
