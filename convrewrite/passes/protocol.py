"""The pass protocol: every step of the pipeline that rewrites is a ``GraphPass`` returning a
``PassResult`` (pattern passes -- shifts, channel shuffles, our domain's ops --, the conv
fixpoint, the tidying passes); a refusal is a typed ``Decline``. Inside the conv fixpoint each
conv the target rejects goes to the ``Pass`` (a registered lowering through the ONNX Builder, or
a conv pass not yet ported to the lowering contract) that owns the rule it breaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import onnx
import onnx_graphsurgeon as gs

from ..build.onnx_read import IO_POSITIONS, ConstWeight, RuntimeWeight, conv_weight
from ..conv import ConvSpec
from ..decline import Decline, Declined, need
from ..gs_graph import isolate_region
from ..rules import (LOWERED_ORDER, LOWERING_ORDER, PATTERN_ORDER, TIDY_ORDER, Violation,
                     add_fixer)
from ..naming import Names
from ..record import Record
from ..target import Target


@dataclass
class RewriteContext:
    graph: gs.Graph
    target: Target
    opset: int
    names: Names = field(default_factory=Names)               # node and tensor names in use
    regroupable_sums: set[str] = field(default_factory=set)   # Adds a later pass may regroup
    emitted: set[str] = field(default_factory=set)            # nodes pattern passes made
    sparse_inputs: tuple[str, ...] = ()                       # tensors named mostly zero
    sparse_samples: dict = field(default_factory=dict)        # ... a real value of some of them

    def fresh(self, wanted: str) -> str:
        return self.names.fresh(wanted)


class Pass:
    """Subclasses set ``name`` and ``fixes`` and implement ``rewrite``, which either returns the
    Record of the replacement it made or raises Declined (via ``need``/``require_ops``)."""

    name: ClassVar[str] = ""
    fixes: ClassVar[frozenset[str]] = frozenset()

    def run(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
            ctx: RewriteContext) -> Record | Decline:
        try:
            return self.rewrite(node, spec, violations, ctx)
        except Declined as declined:
            return declined.decline

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        raise NotImplementedError

    def takes(self, spec: ConvSpec, target: Target) -> bool:
        """Whether this pass would rewrite the conv, where that can be told from the spec alone
        (``--check-only`` names the first pass that would); a pass that cannot tell says yes."""
        return True

    @staticmethod
    def require_ops(ctx: RewriteContext, ops) -> None:
        missing = sorted(op for op in set(ops) if not ctx.target.allows_op(op))
        if missing:
            raise Declined(f"the target's ops list lacks {', '.join(missing)}")

    @staticmethod
    def weight(node: gs.Node, opset: int = 17) -> "ConstWeight | RuntimeWeight":
        """The conv's weight, constant or known only at run time (sliced in the graph; what
        needs its values declines)."""
        return need(conv_weight(node.inputs[IO_POSITIONS[node.op][1]], opset))

    def record(self, node: gs.Node, spec: ConvSpec, violations: list[Violation], rewrite: str,
               added: list[gs.Node], tolerance: str, macs_factor: float = 1.0,
               params_after: int | None = None) -> Record:
        """The record of replacing ``node`` (call before the node is detached)."""
        macs = None if spec.macs is None else int(spec.macs * macs_factor)
        return Record(node=node.name, op=node.op, pass_name=self.name,
                      rules=[v for v in violations if v.rule in self.fixes], rewrite=rewrite,
                      input_name=node.inputs[0].name, output_name=node.outputs[0].name,
                      tolerance=tolerance, macs_before=spec.macs, macs_after=macs,
                      params_before=spec.params,
                      params_after=spec.params if params_after is None else params_after,
                      nodes_after=len(added))


@dataclass(frozen=True)
class NodeDecline:
    """A node a pass could not lower, and why (reaches the report's "why" lines)."""

    node: str
    op: str
    decline: Decline


@dataclass
class PassResult:
    """What one pass did (onnx-ir's ``PassResult(model, modified)``, with what the report needs):
    the graph it leaves (``ctx.graph``: a pass may replace it), whether it changed anything, the
    Records of its rewrites, the patterns it recognised and left, the nodes it declined (typed)
    and notes for the report (tidying passes say what they removed)."""

    graph: gs.Graph
    modified: bool = False
    records: list[Record] = field(default_factory=list)
    recognised: list[str] = field(default_factory=list)
    declines: list[NodeDecline] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def decline(self, node: gs.Node, reason: "Decline | str") -> None:
        self.declines.append(NodeDecline(node.name, node.op, reason if isinstance(reason, Decline)
                                         else Decline(reason)))

    def add(self, record: Record) -> None:
        self.records.append(record)
        self.modified = True


class GraphPass:
    """The one pass protocol of the pipeline: pattern passes (our ops, shuffles, shifts), the conv
    fixpoint (``lower_conv.LowerConvs``) and the tidying passes all ``run`` over the context's
    graph and return a PassResult. Per-conv passes (``Pass``) run inside the conv fixpoint."""

    name: ClassVar[str] = ""
    fixes: ClassVar[frozenset[str]] = frozenset()     # the rules it fixes (the README's table)

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        raise NotImplementedError


PASSES: dict[str, type] = {}        # every registered pass by name (the lowerings: LOWERINGS)


def register_pass(cls: type) -> type:
    """Add a pass to the registry; its name says where the pipeline runs it: a pattern, lowered
    or tidying pass (``GraphPass``) in ``rules.PATTERN_ORDER``, ``rules.LOWERED_ORDER`` (after
    the conv fixpoint, in the rewrite step) or ``rules.TIDY_ORDER``, a conv pass
    not yet on the lowering contract (``Pass``) in ``rules.LOWERING_ORDER``."""
    if issubclass(cls, Pass):
        add_fixer(cls.name, cls.fixes, LOWERING_ORDER, "rules.LOWERING_ORDER")
    else:
        add_fixer(cls.name, cls.fixes, PATTERN_ORDER + LOWERED_ORDER + TIDY_ORDER,
                  "rules.PATTERN_ORDER, rules.LOWERED_ORDER or rules.TIDY_ORDER")
    PASSES[cls.name] = cls
    return cls


def lower_each(pass_name: str, nodes: list[gs.Node], lower, graph: gs.Graph) -> PassResult:
    """``lower(node)`` gives a Record, or the Decline saying why not: gathered into one result."""
    result = PassResult(graph)
    for node in nodes:
        outcome = lower(node)
        if isinstance(outcome, Decline):
            result.decline(node, outcome.within(pass_name))
        else:
            result.add(outcome)
    return result


def region_record(pass_name: str, nodes: list[gs.Node], data: "gs.Tensor | list[gs.Tensor]",
                  outputs: list[gs.Tensor], ctx: RewriteContext, like: onnx.ModelProto,
                  rewrite: str, added: list[gs.Node], tolerance: str = "exact",
                  rules: list[Violation] | None = None, macs_before: int | None = None,
                  macs_after: int | None = None) -> Record:
    """The record of replacing ``nodes`` (call before they are detached); ``before`` is the
    region alone, with the constants and shape arithmetic it reads, from ``data`` (or several
    tensors: the first is the record's input, the others more inputs)."""
    head = nodes[0]
    first = data[0] if isinstance(data, (list, tuple)) else data
    record = Record(node=head.name, op=head.op, pass_name=pass_name, rules=list(rules or []),
                    rewrite=rewrite, input_name=first.name, output_name=outputs[0].name,
                    tolerance=tolerance, macs_before=macs_before, macs_after=macs_after,
                    nodes_before=len(nodes), nodes_after=len(added),
                    more_outputs=[t.name for t in outputs[1:]])
    record.before = isolate_region(nodes, data, outputs, ctx.graph, like)
    record.more_inputs += [i.name for i in record.before.graph.input[1:]]    # graph inputs read
    return record


def detach(nodes: list[gs.Node]) -> None:
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()


def single_consumer(tensor: gs.Tensor, graph: gs.Graph) -> gs.Node | None:
    """The one node reading ``tensor``, when it is not also a graph output."""
    if len(tensor.outputs) != 1 or tensor in graph.outputs:
        return None
    return tensor.outputs[0]
