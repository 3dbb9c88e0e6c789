"""Loading, checking and saving models without losing anything.

Load maps every failure (missing file, not protobuf, failed checker) to a one-line BadInputError.
Save writes atomically (temporary file in the destination folder, then rename), keeps the original's
opset imports, ir_version and metadata, and keeps external data for large models.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError
from onnx_graphsurgeon.logger import G_LOGGER

from .errors import BadInputError

G_LOGGER.severity = G_LOGGER.ERROR      # gs's warnings (e.g. "colored is not installed") are noise
G_LOGGER.colors = False

PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = 1_800_000_000      # leave headroom below protobuf's 2 GB cap


def load_model(path: "str | os.PathLike") -> onnx.ModelProto:
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if not path.is_file():
        raise BadInputError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=True)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise BadInputError(f"{path}: not an ONNX model (cannot parse protobuf: "
                            f"{_first_line(exc)})") from None
    except (FileNotFoundError, OSError) as exc:
        raise BadInputError(f"{path}: cannot read model or its external data: "
                            f"{_first_line(exc)}") from None
    if not model.graph.node and not model.graph.output:
        raise BadInputError(f"{path}: not an ONNX model (no graph)")
    check_model(model, str(path))
    return model


def check_model(model: onnx.ModelProto, origin: str = "model") -> None:
    try:
        if model.ByteSize() > PROTOBUF_LIMIT:
            return          # the in-memory checker cannot take it; onnxruntime will complain
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise BadInputError(f"{origin}: invalid ONNX model: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes for every tensor we can know (data_prop resolves Shape->Reshape chains)."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:           # noqa: BLE001 - inference is best effort; shapes stay unknown
        return model


def opset_version(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    return gs.import_onnx(infer_shapes(model))


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


def initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
               * int(np.prod(t.dims)) for t in model.graph.initializer)


def has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def file_uses_external_data(path: "str | os.PathLike") -> bool:
    """Whether the file on disk keeps tensors outside (loading inlines them, so ask the file)."""
    try:
        return has_external_data(onnx.load(str(path), load_external_data=False))
    except Exception:       # noqa: BLE001 - load_model has already said what is wrong
        return False


def save_model(model: onnx.ModelProto, path: "str | os.PathLike", *,
               external_data: bool | None = None) -> None:
    """Write atomically; external data goes to ``<name>.data`` beside the model when the model is
    too big for one protobuf (or when asked)."""
    path = Path(path)
    if external_data is None:
        external_data = initializer_bytes(model) > EXTERNAL_THRESHOLD
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        data_name = f"{path.name}.data"
        if external_data:
            onnx.save_model(model, str(staged), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        else:
            onnx.save_model(model, str(staged))
        if external_data and (Path(tmp) / data_name).exists():
            os.replace(Path(tmp) / data_name, folder / data_name)
        os.replace(staged, path)


def copy_model_file(src: "str | os.PathLike", dst: "str | os.PathLike") -> None:
    """Byte-for-byte copy (the idempotent case), atomic like save_model."""
    dst = Path(dst)
    with tempfile.NamedTemporaryFile(dir=dst.parent or ".", prefix=f".{dst.name}.",
                                     delete=False) as tmp:
        with open(src, "rb") as f:
            shutil.copyfileobj(f, tmp)
    os.replace(tmp.name, dst)


def isolate_node(node: gs.Node, graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """One node with the constant-producing nodes behind its non-data inputs, as a model whose
    only input is the node's data input: the "before" side of a local check."""
    return isolate_region([node], node.inputs[0], [node.outputs[0]], graph, like)


def isolate_region(nodes: list[gs.Node], data: "gs.Tensor | list[gs.Tensor]",
                   outputs: list[gs.Tensor], graph: gs.Graph,
                   like: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes that compute ``outputs`` from the tensor ``data`` (or several: a SparseConv's features
    and coordinates), with whatever else they read (constants, shape arithmetic on ``data``), as a
    model of those inputs."""
    inputs = list(data) if isinstance(data, (list, tuple)) else [data]
    is_input = lambda t: any(t is d for d in inputs)     # noqa: E731
    keep = list(nodes)
    stack = [t for n in nodes for t in n.inputs if not is_input(t)]
    while stack:
        tensor = stack.pop()
        if is_input(tensor):
            continue
        for producer in tensor.inputs:
            if producer not in keep:
                keep.append(producer)
                stack.extend(t for t in producer.inputs if not is_input(t))
    order = {id(n): i for i, n in enumerate(graph.nodes)}      # the graph is kept toposorted
    keep.sort(key=lambda n: order.get(id(n), -1))
    sub = gs.Graph(nodes=keep, inputs=inputs, outputs=list(outputs))
    model = gs.export_onnx(sub, do_type_check=False, opset_imports=list(like.opset_import))
    model.ir_version = like.ir_version
    return model
