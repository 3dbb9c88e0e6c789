"""The contract for rewrites found by pattern rather than by one conv's violations (shifts,
channel shuffles, our domain's ops): they run once, before the conv fixpoint, over the graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import onnx
import onnx_graphsurgeon as gs

from ..graph import isolate_region
from ..legality import Violation
from ..record import Record
from .base import RewriteContext


@dataclass
class GraphOutcome:
    records: list[Record] = field(default_factory=list)
    recognised: list[str] = field(default_factory=list)        # patterns seen, left as they are
    unlowered: list[tuple[str, str, str]] = field(default_factory=list)  # (node, op, reason)


class GraphPass:
    name: ClassVar[str] = ""

    def apply(self, ctx: RewriteContext, like: onnx.ModelProto) -> GraphOutcome:
        raise NotImplementedError


def lower_each(pass_name: str, nodes: list[gs.Node], lower) -> GraphOutcome:
    """``lower(node)`` gives a Record, or the reason it declined: gathered into one outcome."""
    outcome = GraphOutcome()
    for node in nodes:
        result = lower(node)
        if isinstance(result, str):
            outcome.unlowered.append((node.name, node.op, f"{pass_name}: {result}"))
        else:
            outcome.records.append(result)
    return outcome


def region_record(pass_name: str, nodes: list[gs.Node], data: gs.Tensor, outputs: list[gs.Tensor],
                  ctx: RewriteContext, like: onnx.ModelProto, rewrite: str, added: list[gs.Node],
                  tolerance: str = "exact", rules: list[Violation] | None = None,
                  macs_before: int | None = None, macs_after: int | None = None) -> Record:
    """The record of replacing ``nodes`` (call before they are detached); ``before`` is the
    region alone, with the constants and shape arithmetic it reads."""
    head = nodes[0]
    record = Record(node=head.name, op=head.op, pass_name=pass_name, rules=list(rules or []),
                    rewrite=rewrite, input_name=data.name, output_name=outputs[0].name,
                    tolerance=tolerance, macs_before=macs_before, macs_after=macs_after,
                    nodes_before=len(nodes), nodes_after=len(added),
                    more_outputs=[t.name for t in outputs[1:]])
    record.before = isolate_region(nodes, data, outputs, ctx.graph, like)
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
