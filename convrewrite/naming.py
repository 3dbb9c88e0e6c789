"""Unique names that stay readable and deterministic: the wanted name, else ``wanted_1``, ..."""

from __future__ import annotations

from typing import Iterable

from .walk import scopes


class Names:
    def __init__(self, taken: Iterable[str] = ()):
        self.taken = set(taken)

    @classmethod
    def in_graph(cls, graph) -> "Names":
        """Every node and tensor name of an onnx-graphsurgeon graph, its If/Loop/Scan bodies and
        functions included (a body's rewrite and the main graph's draw from one set), taken."""
        return cls([name for scope in scopes(graph)
                    for name in [*(n.name for n in scope.graph.nodes), *scope.graph.tensors()]])

    def fresh(self, wanted: str) -> str:
        name, k = wanted, 1
        while name in self.taken:
            name, k = f"{wanted}_{k}", k + 1
        self.taken.add(name)
        return name
