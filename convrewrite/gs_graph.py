"""A model as the onnx-graphsurgeon graph the passes rewrite (every shape known that can be), and
back (everything the model carried besides its graph kept); and pieces of a graph cut out as
models of their own, the "before" side of a local check. Loading, checking and saving models is
``graph``'s."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import (OnnxExporter, check_duplicate_node_names,
                                                        constant_to_onnx_tensor, dtype_to_onnx)
from onnx_graphsurgeon.importers.onnx_importer import (OnnxImporter, get_onnx_tensor_dtype,
                                                        get_onnx_tensor_shape, get_onnx_tensor_type)
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues
from onnx_graphsurgeon.logger import G_LOGGER

from .batch_shapes import with_learned_shapes
from .gs_order import cleanup_and_toposort, plain
from .graph import LARGE_TENSOR_BYTES, STAND_IN_LOCATION, infer_shapes, large_tensor


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    """The graph with every shape we can know: inferred, then the dims inference leaves unknown
    only because they are computed from a symbolic batch learned (``batch_shapes``)."""
    return gs.import_onnx(with_learned_shapes(infer_shapes(model)))


def from_graph(graph: gs.Graph, like: onnx.ModelProto,
               stand_ins: "dict[str, gs.Constant] | None" = None) -> onnx.ModelProto:
    """Export a graph with everything the original model carried besides its graph.
    ``stand_ins`` (a dict to fill): each large weight is exported as the data-less stand-in
    shape inference sees in its place anyway (``graph.with_stand_ins``), and noted there by
    name (``reimported``)."""
    cleanup_and_toposort(graph)
    model = _export_onnx(graph, list(like.opset_import), stand_ins)
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


def reimported(graph: gs.Graph, like: onnx.ModelProto) -> gs.Graph:
    """``to_graph(from_graph(graph, like))`` (the graph with every shape inferred afresh after a
    rewrite), without copying a large weight: each goes out as the stand-in inference sees in
    its place anyway, and the Constant imported for it takes the values it had (read as the
    exported tensor would be, ``_Deferred``). Same model, same graph; every fixpoint round
    copied each weight two or three times (export, inference's copy back, the batch-shape
    copy): ResNet-50 at c256, 100 MB a round."""
    stand_ins: dict[str, gs.Constant] = {}
    return _imported(from_graph(graph, like, stand_ins), stand_ins)


def _imported(light: onnx.ModelProto, stand_ins: dict[str, gs.Constant]) -> gs.Graph:
    """``light`` (exported with ``stand_ins``) as a graph, each stand-in's Constant taking the
    values the exported one had."""
    out = to_graph(light)
    if stand_ins:
        for tensor in out.tensors().values():
            source = stand_ins.get(tensor.name) if isinstance(tensor, gs.Constant) else None
            if source is not None:
                tensor._values = _values_of(source, tensor._values)
                tensor.data_location = _location_of(source)
    return out


def reinferred(graph: gs.Graph, like: onnx.ModelProto) -> gs.Graph:
    """``reimported(graph, like)`` made on ``graph`` itself: exported (cleaned up and toposorted
    in place, its large weights as stand-ins), shapes inferred afresh, and each of its own
    Variables given the dtype, shape and type gs's importer would give the tensor of that name,
    its nodes, attributes and Constants kept as they are (importing the whole graph again was
    most of every fixpoint round: 0.53 of 0.71 s in the last round of the 1-D signal net tiled for
    k210, 4,000 nodes). A graph the importer would join or split differently (a subgraph, a
    function, two tensors of one name) is reimported."""
    stand_ins: dict[str, gs.Constant] = {}
    light = from_graph(graph, like, stand_ins)
    tensors = _own_tensors(graph)
    if tensors is None:
        return _imported(light, stand_ins)
    inferred = with_learned_shapes(infer_shapes(light))
    types = _imported_types(inferred.graph)
    for name, tensor in tensors.items():
        dtype, shape, kind = types.get(name, (None, None, "tensor_type"))
        tensor.dtype, tensor.shape, tensor.type = dtype, shape, kind
    graph.name, graph.doc_string = light.graph.name, light.graph.doc_string
    graph.opset = OnnxImporter.get_opset(light)
    graph.import_domains = OnnxImporter.get_import_domains(light)
    graph.producer_name, graph.producer_version = light.producer_name, light.producer_version
    graph.ir_version = light.ir_version
    return graph


def _own_tensors(graph: gs.Graph) -> "dict[str, gs.Variable] | None":
    """The graph's named Variables by name, where importing its export would give it the same
    tensors (``gs_order.plain``: no function or subgraph; no name held by two tensors); else
    None."""
    if not plain(graph):
        return None
    seen: dict[str, gs.Tensor] = {}
    for tensor in [*graph.inputs, *graph.outputs,
                   *(t for node in graph.nodes for t in (*node.inputs, *node.outputs))]:
        if tensor.name and seen.setdefault(tensor.name, tensor) is not tensor:
            return None
    return {name: t for name, t in seen.items() if isinstance(t, gs.Variable)}


def _imported_types(g: onnx.GraphProto) -> dict[str, tuple]:
    """(dtype, shape, type) per name as gs's importer sets them: value_info first (a repeated
    name fills what the first left unknown), then graph inputs and outputs not named there;
    a ValueInfo without a type gives none."""
    initializers = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
    found: dict[str, tuple] = {}
    for info in g.value_info:
        if info.name in initializers:
            continue
        made = _variable_type(info)
        if info.name in found:
            old = found[info.name]
            made = (old[0] or made[0], old[1] or made[1], old[2])
        found[info.name] = made
    for info in [*(i for i in g.input if i.name not in initializers), *g.output]:
        found.setdefault(info.name, _variable_type(info))
    return found


def _variable_type(info: onnx.ValueInfoProto) -> tuple:
    """What ``OnnxImporter.import_tensor`` sets on the Variable of ``info``, without making one
    (a Variable per tensor was 0.7 of 5.0 s in the rounds of the 1-D net, profiled)."""
    if info.type.ByteSize() == 0:
        return None, None, "tensor_type"
    return get_onnx_tensor_dtype(info), get_onnx_tensor_shape(info), get_onnx_tensor_type(info)


class _Deferred(LazyValues):
    """A Constant's numpy values as ``LazyValues`` of the tensor ``from_graph`` would export
    for them (shape and dtype read from that tensor's stand-in, the values a fresh copy on each
    load): the tensor itself is made only when something asks for it."""

    def __init__(self, stand_in: LazyValues, name: str, array: np.ndarray,
                 location: "int | None"):
        self.shape, self.dtype, self.nbytes = stand_in.shape, stand_in.dtype, stand_in.nbytes
        self._source = (name, array, location)
        self._tensor = None

    @property
    def tensor(self) -> onnx.TensorProto:
        if self._tensor is None:
            name, array, location = self._source
            self._tensor = constant_to_onnx_tensor(gs.Constant(name, array))
            if location is not None:
                self._tensor.data_location = location
        return self._tensor

    @tensor.setter
    def tensor(self, value: onnx.TensorProto) -> None:
        self._tensor = value

    def load(self) -> np.ndarray:
        """What ``LazyValues.load`` reads back from the exported tensor: a C-ordered copy of
        the same values and dtype (plain numpy types only, ``_stand_in``)."""
        return np.array(self._source[1], order="C")

    @property
    def location(self) -> "int | None":
        return self._source[2]


def _values_of(source: gs.Constant, stand_in: LazyValues) -> LazyValues:
    values = source._values
    if isinstance(values, LazyValues):
        return values
    return _Deferred(stand_in, source.name, values, source.data_location)


def _location_of(source: gs.Constant) -> "int | None":
    """The ``data_location`` gs's importer gives the Constant of ``source`` exported."""
    values = source._values
    if isinstance(values, _Deferred):
        location = values.location
        return None if location is None else int(location)
    if isinstance(values, LazyValues):
        proto = values.tensor
        return int(proto.data_location) if proto.HasField("data_location") else None
    return None if source.data_location is None else int(source.data_location)


_PLAIN = {np.dtype(t) for t in (np.float32, np.float64, np.float16, np.int8, np.int16, np.int32,
                                np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)}


def _stand_in(constant: gs.Constant) -> "onnx.TensorProto | None":
    """The stand-in ``graph.with_stand_ins`` would make of ``constant`` exported, where it
    would make one and the Constant's values come back unchanged from an export (a tensor of
    gs's importer, or a plain numpy array exported as it is); else None."""
    values = constant._values
    if isinstance(values, SparseValues):
        return None
    if isinstance(values, LazyValues):
        proto = values.tensor if not isinstance(values, _Deferred) else None
        if proto is not None and not large_tensor(proto):   # its dims and type alone decide
            return None
        if proto is None and values.nbytes <= LARGE_TENSOR_BYTES:     # plain numpy: exact
            return None
        data_type = proto.data_type if proto is not None else dtype_to_onnx(values.dtype)
        dims = list(proto.dims) if proto is not None else list(values.shape)
    elif isinstance(values, np.ndarray) and values.dtype in _PLAIN and values.dtype.isnative \
            and constant._export_dtype in (None, values.dtype):
        if values.nbytes <= LARGE_TENSOR_BYTES:     # what large_tensor counts, for these types
            return None
        data_type, dims = dtype_to_onnx(values.dtype), list(values.shape)
    else:
        return None
    stub = onnx.TensorProto(name=constant.name, data_type=data_type, dims=dims)
    if not large_tensor(stub):
        return None
    stub.data_location = onnx.TensorProto.EXTERNAL
    stub.external_data.add(key="location", value=STAND_IN_LOCATION)
    return stub


def _export_onnx(graph: gs.Graph, opset_imports: list,
                 stand_ins: "dict[str, gs.Constant] | None" = None) -> onnx.ModelProto:
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
    for t in constants:
        if not isinstance(t._values, SparseValues):
            _add_initializer(g.initializer, t, stand_ins)
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


def _add_initializer(field, constant: gs.Constant,
                     stand_ins: "dict[str, gs.Constant] | None") -> None:
    """``OnnxExporter.export_tensor_proto(constant)`` (or its stand-in, ``_stand_in``) made
    inside the model's initializer list: appending a made tensor copies it through protobuf's
    encoder (0.5 s per 100 MB of weights, measured; CopyFrom 0.17 s), so a plain numpy weight's
    tensor is built in place (its bytes set once) and any other is copied in with CopyFrom."""
    stub = _stand_in(constant) if stand_ins is not None else None
    if stub is not None:
        stand_ins[constant.name] = constant
        field.add().CopyFrom(stub)
        return
    values = constant._values
    if isinstance(values, np.ndarray) and values.dtype in _PLAIN and values.dtype.isnative \
            and constant._export_dtype in (None, values.dtype):
        tensor = field.add()        # the fields onnx.helper.make_tensor(raw=True) sets
        tensor.name = constant.name
        tensor.data_type = dtype_to_onnx(values.dtype)
        tensor.raw_data = values.tobytes()
        tensor.dims.extend(values.shape)
        if constant.data_location is not None:
            tensor.data_location = constant.data_location
        return
    field.add().CopyFrom(OnnxExporter.export_tensor_proto(constant))


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
