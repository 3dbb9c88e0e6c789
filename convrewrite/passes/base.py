"""The contract between the pipeline and a pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..legality import Violation
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

    def fresh(self, wanted: str) -> str:
        return self.names.fresh(wanted)


class Pass:
    """Subclasses set ``name`` and ``fixes`` and implement ``run``."""

    name: ClassVar[str] = ""
    fixes: ClassVar[frozenset[str]] = frozenset()

    def run(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
            ctx: RewriteContext) -> Record | str:
        raise NotImplementedError

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
