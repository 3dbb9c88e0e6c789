"""Unique names that stay readable and deterministic: the wanted name, else ``wanted_1``, ..."""

from __future__ import annotations

from typing import Iterable


class Names:
    def __init__(self, taken: Iterable[str] = ()):
        self.taken = set(taken)

    @classmethod
    def in_graph(cls, graph) -> "Names":
        """Every node and tensor name of an onnx-graphsurgeon graph, taken."""
        return cls([*(n.name for n in graph.nodes), *graph.tensors()])

    def fresh(self, wanted: str) -> str:
        name, k = wanted, 1
        while name in self.taken:
            name, k = f"{wanted}_{k}", k + 1
        self.taken.add(name)
        return name
