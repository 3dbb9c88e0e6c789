"""Conv lowering on ONNX: a registered lowering (``lowerings``) run on one conv node (plan it,
build the replacement with the ONNX Builder, record it, put it in the graph), and the fixpoint
that runs every conv lowering over a graph (``LowerConvs``)."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..build.builder import ConvSite
from ..build.onnx import OnnxBuilder
from ..build.onnx_read import IO_POSITIONS, conv_nodes, quant_operands, runtime_operands, spec_of
from ..conv import ConvSpec
from ..decline import Decline, need
from ..gs_graph import isolate_node, reinferred
from ..legality import check
from ..lowerings import Lowering
from ..lowerings.dead_taps import DeadTaps, trims_first
from ..record import Record
from ..rules import Violation
from .emit import replace
from .fold_weights import FoldWeights
from .protocol import GraphPass, Pass, PassResult, RewriteContext
from .weight_shapes import find_weight_shapes

MAX_ITERATIONS = 16


def onnx_site(node: gs.Node, spec: ConvSpec, weight) -> ConvSite:
    """The node as a ConvSite: its bias where its op keeps it (QLinearConv: input 8)."""
    bias = node.inputs[IO_POSITIONS[node.op][2]] if spec.has_bias else None
    return ConvSite(node.name, spec, node.inputs[0], node.outputs[0], weight, bias,
                    dict(node.attrs), quant_operands(node),
                    node.inputs[IO_POSITIONS[node.op][1]])


class OnnxLowering(Pass):
    """The conv-pass face of a lowering: the pipeline's fixpoint runs it like any conv pass."""

    def __init__(self, lowering: Lowering):
        self.lowering = lowering
        self.name = lowering.name
        self.fixes = lowering.fixes

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        planned = need(self.lowering.plan(spec, ctx.target))
        site = onnx_site(node, spec, self.weight(node, ctx.opset))
        b = OnnxBuilder(ctx.fresh, node.name, opset=ctx.opset, regroupable=ctx.regroupable_sums)
        self.lowering.emit(b, site, planned)
        record = self.record(node, spec, violations, planned.rewrite, b.nodes, planned.tolerance,
                             macs_factor=planned.macs_factor, params_after=planned.params_after)
        replace(node, ctx, b.nodes)
        return record


def conv_pass(p: "Pass | Lowering") -> Pass:
    """A conv pass as the fixpoint runs it: registered lowerings through the ONNX Builder."""
    return OnnxLowering(p) if isinstance(p, Lowering) else p


class LowerConvs(GraphPass):
    """The conv fixpoint: each conv the target rejects goes to the first pass (in
    ``rules.LOWERING_ORDER``) that fixes a rule it breaks and does not decline; again, on what
    that made, until nothing changes (at most MAX_ITERATIONS rounds). After each round that
    changed something, shapes are inferred afresh, so the next round's legality checks (input
    sizes, batch) see the real extents of what the passes emitted. Every pass's reason for
    declining a conv is kept for the report. Before any of that, every conv (legal or not) loses
    the kernel taps that only ever read padding (``dead_taps``), where the trimmed conv breaks no
    rule the conv did not already break. First, weights computed from constants become
    initializers (``FoldWeights``: lowerings slice constants); noted only when a conv was then
    rewritten, since otherwise the original model is what the pipeline returns. A weight or
    bias known only at run time is sliced in the graph (``build.onnx_read.RuntimeWeight``); a
    record's local check feeds it as it reaches the conv, like the data input; where shape
    inference cannot tell its shape, running what computes it does (``find_weight_shapes``)."""

    name = "lowerings"

    def __init__(self, passes):
        self.passes = tuple(conv_pass(p) for p in passes)
        # Taps that only read padding go first, on every conv (exact, fewer MACs for all after).
        self.trim = next((p for p in self.passes if p.name == DeadTaps.name), None)

    @staticmethod
    def _apply(p: Pass, node: gs.Node, spec: ConvSpec, violations: list[Violation],
               ctx: RewriteContext, like: onnx.ModelProto, result: PassResult, said: set) -> bool:
        """Run one pass on one conv: its Record (with the original node isolated for the local
        check) or its reason, each reason once per node."""
        before = isolate_node(node, ctx.graph, like, runtime_operands(node))
        outcome = p.run(node, spec, violations, ctx)
        if isinstance(outcome, Record):
            outcome.before = before
            outcome.more_inputs += [i.name for i in before.graph.input[1:]]
            result.add(outcome)
            return True
        reason = outcome.within(p.name)
        if (node.name, reason) not in said:
            said.add((node.name, reason))
            result.decline(node, reason)
        return False

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        folding = FoldWeights().run(ctx, like)
        result = PassResult(ctx.graph, declines=list(folding.declines))
        shaped = find_weight_shapes(ctx.graph, like)
        said = {(d.node, d.decline) for d in result.declines}     # each reason once per node
        for _ in range(MAX_ITERATIONS):
            changed = False
            for node in conv_nodes(ctx.graph):
                spec = spec_of(node)
                if isinstance(spec, Decline):
                    result.decline(node, spec)
                    said.add((node.name, spec))
                    continue
                violations = check(spec, ctx.target)
                rules = {v.rule for v in violations}
                if self.trim is not None and trims_first(spec, ctx.target, rules) and \
                        self._apply(self.trim, node, spec, violations, ctx, like, result, said):
                    changed = True
                    continue
                if not violations:
                    continue
                for p in self.passes:
                    if rules & p.fixes and self._apply(p, node, spec, violations, ctx, like,
                                                       result, said):
                        changed = True
                        break
            if not changed:
                break
            ctx.graph = reinferred(ctx.graph, like)
        if result.records:
            result.notes += folding.notes
            if shaped:
                result.notes.append(f"shapes of {len(shaped)} weights computed at run time found "
                                    f"by running what computes them: {', '.join(shaped)}")
        result.graph = ctx.graph
        return result
