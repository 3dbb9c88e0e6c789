"""Shapes of conv weights known only at run time, found by running what computes them.

A weight computed from a graph input (a modulated conv's style product reshaped by shape
arithmetic, weight norm kept in the graph) is sliced in the graph by the lowerings, which needs
its extents; shape inference cannot always tell them (shape arithmetic it does not follow, such as
Max of two Shapes). Here the nodes computing such a weight run alone on onnxruntime, fed random
arrays of the graph inputs' declared shapes, and the weight's shape is set on its tensor. Only
static float inputs are fed, up to FEED_LIMIT bytes: a shape that could depend on an input's
values (an integer input) or on a symbolic extent stays unknown, and the conv is declined with
"weight shape is unknown".
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx_read import IO_POSITIONS, conv_nodes, runtime_operands
from ..gs_graph import isolate_region
from ..verify import run

FEED_LIMIT = 2**26                  # bytes of graph inputs fed to find one weight's shape


def _known(tensor: gs.Tensor) -> bool:
    shape = getattr(tensor, "shape", None)
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    """Random arrays for the region's inputs, or None when one is not static float data."""
    rng = np.random.default_rng(0)
    feeds, total = {}, 0
    for info in model.graph.input:
        t = info.type.tensor_type
        if not info.type.HasField("tensor_type") or not t.HasField("shape") or any(
                not d.HasField("dim_value") for d in t.shape.dim):
            return None
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if not np.issubdtype(dtype, np.floating):
            return None
        shape = [d.dim_value for d in t.shape.dim]
        total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if total > FEED_LIMIT:
            return None
        feeds[info.name] = rng.uniform(-1, 1, shape).astype(dtype)
    return feeds


def find_weight_shapes(graph: gs.Graph, like: onnx.ModelProto) -> list[str]:
    """Set the shape of every conv weight known only at run time whose shape inference left
    unknown, where running what computes it tells; the names of the weights found."""
    found = []
    for node in conv_nodes(graph):
        w = node.inputs[IO_POSITIONS[node.op][1]]
        if _known(w) or len(w.inputs) != 1 or all(w is not t for t in runtime_operands(node)):
            continue
        model = isolate_region([w.inputs[0]], [], [w], graph, like)
        feeds = _feeds(model)
        if feeds is None:
            continue
        try:
            value = run(model, feeds)[w.name]
        except Exception:           # noqa: BLE001 - the shape stays unknown, and says so
            continue
        w.shape = list(value.shape)
        if w.dtype is None:
            w.dtype = value.dtype
        found.append(w.name)
    return found
