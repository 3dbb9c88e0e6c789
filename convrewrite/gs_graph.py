"""A model as the onnx-graphsurgeon graph the passes rewrite (every shape known that can be), and
back (everything the model carried besides its graph kept); and pieces of a graph cut out as
models of their own, the "before" side of a local check. Loading, checking and saving models is
``graph``'s."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter, check_duplicate_node_names
from onnx_graphsurgeon.ir.tensor import SparseValues
from onnx_graphsurgeon.logger import G_LOGGER

from .batch_shapes import with_learned_shapes
from .graph import infer_shapes


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    """The graph with every shape we can know: inferred, then the dims inference leaves unknown
    only because they are computed from a symbolic batch learned (``batch_shapes``)."""
    return gs.import_onnx(with_learned_shapes(infer_shapes(model)))


def from_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export a graph with everything the original model carried besides its graph."""
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = _export_onnx(graph, list(like.opset_import))
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


def _export_onnx(graph: gs.Graph, opset_imports: list) -> onnx.ModelProto:
    """``gs.export_onnx(graph, do_type_check=False, opset_imports=...)``, field for field, with
    the graph built inside the model: gs builds a GraphProto that ``onnx.helper.make_model``
    then copies whole into the model, so every weight was copied twice per export (ConvNeXt-tiny
    c256 without verification: 1.0 of 2.0 s in the three exports, all of it those copies).
    Mirrors onnx-graphsurgeon 0.6's ``OnnxExporter.export_graph`` and ``export_onnx`` (with
    onnx's ``make_graph``/``make_model``); tests/digests holds the bytes to it."""
    exporter = OnnxExporter
    check_duplicate_node_names(graph.nodes, level=G_LOGGER.WARNING)
    model = onnx.ModelProto()
    model.ir_version = onnx.IR_VERSION
    g = model.graph
    g.node.extend([exporter.export_node(node) for node in graph.nodes])
    g.name = graph.name
    g.input.extend([exporter.export_value_info_proto(t, False) for t in graph.inputs])
    g.output.extend([exporter.export_value_info_proto(t, False) for t in graph.outputs])
    tensor_map = graph.tensors()
    constants = [t for t in tensor_map.values() if isinstance(t, gs.Constant)]
    g.initializer.extend([exporter.export_tensor_proto(t) for t in constants
                          if not isinstance(t._values, SparseValues)])
    g.sparse_initializer.extend([exporter.export_sparse_tensor_proto(t) for t in constants
                                 if isinstance(t._values, SparseValues)])
    for tensor in graph.inputs + graph.outputs:
        tensor_map.pop(tensor.name, None)
    g.value_info.extend([exporter.export_value_info_proto(t, False) for t in tensor_map.values()
                         if isinstance(t, gs.Variable) and (t.dtype is not None
                                                            or t.shape is not None)])
    if graph.doc_string:
        g.doc_string = graph.doc_string
    model.opset_import.extend(opset_imports)
    model.functions.extend([exporter.export_function(f) for f in graph.functions])
    model.producer_name = graph.producer_name
    model.producer_version = graph.producer_version
    if graph.ir_version is not None:
        model.ir_version = graph.ir_version
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
    model = _export_onnx(sub, list(like.opset_import))
    model.ir_version = like.ir_version
    return model
