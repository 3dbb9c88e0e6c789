"""Running a data-movement region alone on onnxruntime: the shuffle and rank-reduction passes
learn what a region does from probe inputs instead of from the exporter's spelling of it."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from ..batch_shapes import why_unknown
from ..decline import Decline
from ..gs_graph import from_graph, isolate_region
from ..ort_setup import session_options

PROBE_EXTENT = (3, 5, 7)     # sizes for dynamic axes: distinct, so a mix-up shows
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def model_batches(x: gs.Tensor, graph: gs.Graph, like: onnx.ModelProto,
                  batches: tuple[int, ...]) -> list[int] | None:
    """``x``'s batch when the model's inputs have batch b, for each b in ``batches`` (shape
    inference with the shape arithmetic folded): a region behind a batch-folding Reshape
    ([N, C, H, W] -> [N * k, ...], as TorchScript writes MobileViT's patches) must be probed with
    the model inputs it was computed from. None where inference cannot tell."""
    model = from_graph(graph.copy(), like)             # graph -> proto, as the pipeline does
    found = []
    for b in batches:
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        for value in trial.graph.input:
            dims = value.type.tensor_type.shape.dim
            if dims and not dims[0].HasField("dim_value"):
                dims[0].dim_value = b
        del trial.graph.value_info[:]
        try:
            inferred = onnx.shape_inference.infer_shapes(trial, data_prop=True)
        except Exception:           # noqa: BLE001 - inference raises many types; then unknown
            return None
        value = next((v for v in inferred.graph.value_info if v.name == x.name), None)
        dims = value.type.tensor_type.shape.dim if value is not None else []
        if not dims or not dims[0].HasField("dim_value"):
            return None
        found.append(dims[0].dim_value)
    return found


def why_shape_unknown(x: gs.Tensor, graph: gs.Graph, like: onnx.ModelProto) -> str:
    """" (why)" where ``x``'s shape is not learned from the batch (``batch_shapes``), else "":
    the note a decline over x's unknown shape ends with."""
    why = why_unknown(from_graph(graph.copy(), like), x.name)
    return f" ({why})" if why else ""


def run_region(x: gs.Tensor, nodes: list[gs.Node], outputs: list[gs.Tensor], graph: gs.Graph,
               like: onnx.ModelProto, probes: list[np.ndarray],
               fill_batches: list[int] | None = None) -> list[list[np.ndarray]] | Decline:
    """The region's outputs for each probe fed as ``x`` (the probes share one dtype, which
    replaces x's: a Q/DQ in the region passes values through; an axis on which their extents
    differ is symbolic). Graph inputs the region also reads (shape arithmetic on the model's
    input) get zeros, of each probe's batch (or of ``fill_batches``, the model batch each probe
    stands for); or why it cannot run."""
    dims = [d if all(p.shape[i] == d for p in probes) else f"probe_{i}"
            for i, d in enumerate(probes[0].shape)]
    model = isolate_region(nodes, x, outputs, graph, like)
    for node in model.graph.node:           # element bookkeeping only: Q/DQ pass values through
        if node.op_type in QDQ_OPS:
            node.op_type, node.domain = "Identity", ""
            del node.input[1:]
            del node.attribute[:]
    del model.graph.value_info[:]           # the types there may be the quantized ones
    names = [o.name for o in model.graph.output]
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    others = {i.name: i for i in model.graph.input if i.name != x.name}   # graph inputs the
    del model.graph.input[:]                                              # region reads too
    model.graph.input.extend([onnx.helper.make_tensor_value_info(
        x.name, onnx.helper.np_dtype_to_tensor_dtype(probes[0].dtype), dims)])
    fills = fill_batches or [probe.shape[0] for probe in probes]
    extras = [{name: _probe_fill(info, batch) for name, info in others.items()}
              for batch in fills]
    if any(v is None for extra in extras for v in extra.values()):
        return Decline("the region reads a graph input of a type it cannot probe")
    model.graph.input.extend(others.values())
    try:
        session = ort.InferenceSession(model.SerializeToString(), session_options(),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:       # onnxruntime refuses: not a region we understand
        return Decline(f"the region from {x.name} does not load alone on onnxruntime: "
                       f"{ort_failure(exc)}")
    runs = []
    for probe, extra in zip(probes, extras):
        try:
            runs.append(session.run(None, {x.name: probe, **extra}))
        except Exception as exc:   # noqa: BLE001 - the probe's shape is not one it takes
            return Decline(f"the region from {x.name} fails on a probe of shape "
                           f"{list(probe.shape)}: {ort_failure(exc)}")
    return runs


def ort_failure(exc: Exception) -> str:
    """onnxruntime's error in one line a user can act on: the node and what it said, without
    the source location ("Reshape node 'R7': The input tensor cannot be reshaped ...")."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    found = re.search(r"running (\S+) node\. Name:'([^']*)' Status Message: (.*)", text)
    if found:
        op, name, said = found.groups()
        said = said.split(" was false. ", 1)[-1]
        return f"{op} node {name!r}: {said}"[:300]
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)[:300]


def _probe_fill(info: onnx.ValueInfoProto, batch: int) -> np.ndarray | None:
    """Zeros for a graph input the region reads besides the probed tensor (shape arithmetic on
    the model's input): its static dims, the probe's batch for a symbolic first dim."""
    tensor_type = info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else (batch if i == 0 else PROBE_EXTENT[
        min(i, 2)]) for i, d in enumerate(tensor_type.shape.dim)]
    try:
        return np.zeros(dims, onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
    except (KeyError, TypeError, ValueError):
        return None
