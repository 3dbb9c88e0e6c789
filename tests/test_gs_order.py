"""gs_order.cleanup_and_toposort: onnx-graphsurgeon's cleanup (graph inputs kept) and toposort,
the same nodes in the same order, on generated graphs: dead nodes, shared and duplicated inputs,
graph inputs a node also writes, constants, omitted optional tensors, several outputs."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from hypothesis import given, settings, strategies as st

from convrewrite.gs_order import cleanup_and_toposort
from convrewrite.models import resnet18
from convrewrite.gs_graph import to_graph


@st.composite
def recipes(draw):
    """Nodes in a random order, each reading earlier-made tensors (by index), some graph
    inputs, some constants; a few outputs."""
    n_inputs = draw(st.integers(1, 3))
    n_nodes = draw(st.integers(0, 14))
    nodes = []
    for i in range(n_nodes):
        available = n_inputs + 2 + sum(o for _, o in nodes)
        reads = draw(st.lists(st.integers(-1, available - 1), min_size=0, max_size=3))
        outs = draw(st.integers(1, 2))
        nodes.append((reads, outs))
    order = draw(st.permutations(range(n_nodes)))
    total = n_inputs + 2 + sum(o for _, o in nodes)
    outputs = draw(st.lists(st.integers(0, total - 1), min_size=1, max_size=3, unique=True))
    writes_input = draw(st.booleans())
    return n_inputs, nodes, order, outputs, writes_input


def build(recipe) -> gs.Graph:
    n_inputs, spec, order, outputs, writes_input = recipe
    inputs = [gs.Variable(f"in{i}", np.float32, [1]) for i in range(n_inputs)]
    tensors = inputs + [gs.Constant(f"c{i}", np.zeros(1, np.float32)) for i in range(2)]
    made = []
    for i, (reads, outs) in enumerate(spec):
        ins = [tensors[r] if r >= 0 and r < len(tensors) else gs.Variable.empty() for r in reads]
        out = [gs.Variable(f"n{i}_{k}") for k in range(outs)]
        if writes_input and i == 0 and n_inputs > 1:
            out = out[:1] + [inputs[1]]       # a node that also writes a graph input
        made.append(gs.Node("Op", f"n{i}", inputs=ins, outputs=out))
        tensors += [t for t in out if t not in tensors]
    graph = gs.Graph(nodes=[made[i] for i in order], inputs=inputs,
                     outputs=[tensors[o] for o in outputs if o < len(tensors)])
    return graph


def state(graph: gs.Graph) -> list:
    return [(n.name, [t.name for t in n.inputs], [t.name for t in n.outputs])
            for n in graph.nodes] + [[(t.name, [p.name for p in t.inputs]) for t in graph.inputs]]


@settings(max_examples=400, deadline=None)
@given(recipes())
def test_same_as_graphsurgeon(recipe):
    ours, theirs = build(recipe), build(recipe)
    try:
        theirs.cleanup(remove_unused_graph_inputs=False).toposort()
    except Exception as exc:            # noqa: BLE001 - gs's own error: ours raises it too
        try:
            cleanup_and_toposort(ours)
        except type(exc):
            return
        raise AssertionError("gs raised, ours did not")
    cleanup_and_toposort(ours)
    assert state(ours) == state(theirs)


def test_a_real_graph_in_gs_order():
    a, b = to_graph(resnet18()), to_graph(resnet18())
    for g in (a, b):
        g.nodes.reverse()                   # make the sort do something
    b.cleanup(remove_unused_graph_inputs=False).toposort()
    cleanup_and_toposort(a)
    assert state(a) == state(b) and [n.name for n in a.nodes] != \
        [n.name for n in reversed(b.nodes)]
