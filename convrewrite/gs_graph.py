"""A model as the onnx-graphsurgeon graph the passes rewrite (every shape known that can be), and
back (everything the model carried besides its graph kept); and pieces of a graph cut out as
models of their own, the "before" side of a local check. Loading, checking and saving models is
``graph``'s."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from .batch_shapes import with_learned_shapes
from .graph import infer_shapes


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    """The graph with every shape we can know: inferred, then the dims inference leaves unknown
    only because they are computed from a symbolic batch learned (``batch_shapes``)."""
    return gs.import_onnx(with_learned_shapes(infer_shapes(model)))


def from_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export a graph with everything the original model carried besides its graph."""
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(graph, do_type_check=False, opset_imports=list(like.opset_import))
    model.ir_version = like.ir_version
    model.producer_name = like.producer_name
    model.producer_version = like.producer_version
    model.domain = like.domain
    model.model_version = like.model_version
    model.doc_string = like.doc_string
    del model.metadata_props[:]
    model.metadata_props.extend(like.metadata_props)
    model.graph.name = like.graph.name
    model.graph.doc_string = like.graph.doc_string
    return model


def isolate_node(node: gs.Node, graph: gs.Graph, like: onnx.ModelProto,
                 operands: list[gs.Tensor] = ()) -> onnx.ModelProto:
    """One node with the constant-producing nodes behind its non-data inputs, as a model whose
    inputs are the node's data input and ``operands`` (a weight known only at run time): the
    "before" side of a local check."""
    return isolate_region([node], [node.inputs[0], *operands], [node.outputs[0]], graph, like)


def isolate_region(nodes: list[gs.Node], data: "gs.Tensor | list[gs.Tensor]",
                   outputs: list[gs.Tensor], graph: gs.Graph,
                   like: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes that compute ``outputs`` from the tensor ``data`` (or several: a SparseConv's features
    and coordinates), with whatever else they read (constants, shape arithmetic on ``data``), as a
    model of those inputs. A graph input the region also reads (``Shape`` of the model's input, for
    a dynamic batch) is declared as one more input after ``data``: the model is always valid."""
    inputs = list(data) if isinstance(data, (list, tuple)) else [data]
    is_input = lambda t: any(t is d for d in inputs)     # noqa: E731
    keep = list(nodes)
    stack = [t for n in nodes for t in n.inputs if not is_input(t)]
    while stack:
        tensor = stack.pop()
        if is_input(tensor):
            continue
        if not tensor.inputs and tensor.name and not isinstance(tensor, gs.Constant):
            inputs.append(tensor)
            continue
        for producer in tensor.inputs:
            if producer not in keep:
                keep.append(producer)
                stack.extend(t for t in producer.inputs if not is_input(t))
    # In the graph's order (it is kept toposorted). A lone node needs no look at the whole graph:
    # mapping thousands of nodes for each of thousands of records was quadratic.
    if len(keep) > 1:
        order = {id(n): i for i, n in enumerate(graph.nodes)}
        keep.sort(key=lambda n: order.get(id(n), -1))
    sub = gs.Graph(nodes=keep, inputs=inputs, outputs=list(outputs))
    model = gs.export_onnx(sub, do_type_check=False, opset_imports=list(like.opset_import))
    model.ir_version = like.ir_version
    return model
