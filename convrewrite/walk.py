"""Every graph of a model: the main graph, the bodies of If/Loop/Scan (at any depth) and the
model-local functions, each with a readable path.

Rewrites run on the main graph only; everything that must not stop there (validation, the final
legality check, later rewriting inside subgraphs) walks with this one helper, so that a conv in a
Loop body or a function can never be silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import onnx
import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class Scope:
    """One graph of the model; ``path`` is "" for the main graph, else e.g. ``loop/body`` or
    ``function my.dom::Block`` (nested: ``if_0/then_branch/loop/body``)."""

    path: str
    graph: gs.Graph

    @property
    def main(self) -> bool:
        return self.path == ""

    def where(self, node: gs.Node) -> str:
        """The node's name as reports write it: its path inside the model."""
        return f"{self.path}/{node.name}" if self.path else node.name


def _bodies(graph: gs.Graph, path: str) -> Iterator[Scope]:
    for i, node in enumerate(graph.nodes):
        for attr, value in node.attrs.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for j, sub in enumerate(values):
                if isinstance(sub, gs.Graph):
                    name = node.name or f"{node.op}_{i}"
                    key = attr if len(values) == 1 else f"{attr}.{j}"
                    inner = f"{path}/{name}/{key}" if path else f"{name}/{key}"
                    yield Scope(inner, sub)
                    yield from _bodies(sub, inner)


def scopes(graph: gs.Graph) -> Iterator[Scope]:
    """The main graph first, then every subgraph and function (with their own subgraphs)."""
    yield Scope("", graph)
    yield from _bodies(graph, "")
    for function in getattr(graph, "functions", None) or []:
        path = f"function {function.domain}::{function.name}"
        yield Scope(path, function)
        yield from _bodies(function, path)


def nested_scopes(graph: gs.Graph) -> Iterator[Scope]:
    """Every graph but the main one."""
    return (s for s in scopes(graph) if not s.main)


def proto_graphs(model: onnx.ModelProto, scope=lambda graph, outer: None) -> Iterator[tuple]:
    """Every graph of a protobuf model (the main graph, the functions, and the If/Loop/Scan bodies
    in them at any depth) before onnx-graphsurgeon sees it, each with ``scope(graph, outer)``:
    what the caller makes of it given its enclosing graph's (None for the main graph and the
    functions, which read no outer scope)."""
    todo = [(model.graph, None)] + [(f, None) for f in model.functions]
    while todo:
        graph, outer = todo.pop()
        inner = scope(graph, outer)
        yield graph, inner
        for node in graph.node:
            for attr in node.attribute:
                bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs
                todo.extend((body, inner) for body in bodies)
