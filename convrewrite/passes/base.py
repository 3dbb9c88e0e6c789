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
