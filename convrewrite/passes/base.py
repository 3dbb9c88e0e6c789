"""The contract between the pipeline and a pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..legality import Violation
from ..naming import Names
from ..onnx_conv import IO_POSITIONS, ConstWeight, const_weight
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

    def fresh(self, wanted: str) -> str:
        return self.names.fresh(wanted)


class Decline(Exception):
    """A pass refuses a node; the message says why and reaches the report."""


def need(result):
    """Planners and readers return a value or a reason string; a reason declines the rewrite."""
    if isinstance(result, str):
        raise Decline(result)
    return result


class Pass:
    """Subclasses set ``name`` and ``fixes`` and implement ``rewrite``, which either returns the
    Record of the replacement it made or raises Decline (via ``need``/``require_ops``)."""

    name: ClassVar[str] = ""
    fixes: ClassVar[frozenset[str]] = frozenset()

    def run(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
            ctx: RewriteContext) -> Record | str:
        try:
            return self.rewrite(node, spec, violations, ctx)
        except Decline as reason:
            return str(reason)

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        raise NotImplementedError

    @staticmethod
    def require_ops(ctx: RewriteContext, ops) -> None:
        missing = sorted(op for op in set(ops) if not ctx.target.allows_op(op))
        if missing:
            raise Decline(f"the target's ops list lacks {', '.join(missing)}")

    @staticmethod
    def weight(node: gs.Node) -> ConstWeight:
        return need(const_weight(node.inputs[IO_POSITIONS[node.op][1]]))

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
