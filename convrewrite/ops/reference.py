"""Standard-ONNX reference forms of our domain's ops, so that onnxruntime can run the original
side of every check. Each is the op's definition written literally (a Shift as the depthwise
conv with one-hot kernels; a ChannelwiseConv as the 3-D conv over (C, spatial) it is), never the
lowering a pass emits for a target."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import BadInputError
from ..sparse import reference as sparse_reference
from ..sparse.schema import INVERSE_OP_TYPE as SPARSE_INVERSE_CONV
from ..sparse.schema import OP_TYPE as SPARSE_CONV
from . import DOMAIN, channelwise, shift


def _shift(node: gs.Node, names) -> list[gs.Node]:
    x = node.inputs[0]
    channels = x.shape[1] if x.shape is not None else None
    if not isinstance(channels, int):
        raise BadInputError(f"Shift {node.name!r}: its input's channel count is not static")
    k, d = int(node.attrs.get("kernel_size", 3)), int(node.attrs.get("dilation", 1))
    try:
        offsets = shift.shift_offsets(channels, k, d)
    except ValueError as exc:
        raise BadInputError(f"Shift {node.name!r}: {exc}") from None
    dtype = np.dtype(x.dtype) if x.dtype is not None else np.float32
    weight = gs.Constant(names(f"{node.name}/reference.w"),
                         shift.one_hot_depthwise_weight(offsets, k, d, dtype))
    pad = d * (k // 2)
    return [gs.Node("Conv", names(f"{node.name}/reference"),
                    {"group": channels, "kernel_shape": [k, k], "dilations": [d, d],
                     "pads": [pad] * 4}, [x, weight], list(node.outputs))]


def _channelwise(node: gs.Node, names) -> list[gs.Node]:
    try:
        stride, pads = channelwise.channelwise_attrs(node.attrs)
    except ValueError as exc:
        raise BadInputError(f"ChannelwiseConv {node.name!r}: {exc}") from None
    x, w = node.inputs[0], node.inputs[1]
    bias = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2].name else []
    x5 = gs.Variable(names(f"{node.name}/x5"), dtype=x.dtype)
    w5 = gs.Variable(names(f"{node.name}/w5"), dtype=x.dtype)
    y5 = gs.Variable(names(f"{node.name}/y5"), dtype=x.dtype)
    rank = len(x.shape) - 2 if x.shape is not None else 2
    one = gs.Constant(names(f"{node.name}/axis1"), np.array([1], dtype=np.int64))
    w_shape = gs.Constant(names(f"{node.name}/w_shape"),
                          np.array([1, 1, -1] + [1] * rank, dtype=np.int64))
    return [
        gs.Node("Unsqueeze", names(f"{node.name}/unsqueeze"), {}, [x, one], [x5]),
        gs.Node("Reshape", names(f"{node.name}/w_reshape"), {}, [w, w_shape], [w5]),
        gs.Node("Conv", names(f"{node.name}/reference"),
                {"strides": [stride] + [1] * rank, "pads": [pads[0]] + [0] * rank + [pads[1]]
                 + [0] * rank}, [x5, w5, *bias], [y5]),
        gs.Node("Squeeze", names(f"{node.name}/squeeze"), {}, [y5, one], list(node.outputs)),
    ]


REFERENCES = {shift.OP_TYPE: _shift, channelwise.OP_TYPE: _channelwise,
              SPARSE_CONV: sparse_reference.node_reference,   # dense Conv, sampled at the sites
              SPARSE_INVERSE_CONV: sparse_reference.node_reference}   # dense ConvTranspose


def has_own_ops(model: onnx.ModelProto) -> bool:
    return any(n.domain == DOMAIN and n.op_type in REFERENCES for n in model.graph.node)


def standard_reference(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each of our ops replaced by its literal standard-ONNX definition (the model
    itself when it has none)."""
    if not has_own_ops(model):
        return model
    from ..graph import from_graph, to_graph
    from ..naming import Names
    result = model
    while has_own_ops(result):      # one at a time: shapes after each are inferred afresh
        graph = to_graph(result)
        graph.toposort()
        node = next(n for n in graph.nodes if n.domain == DOMAIN and n.op in REFERENCES)
        added = REFERENCES[node.op](node, Names.in_graph(graph).fresh)
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes.extend(added)
        result = from_graph(graph, model)
    return drop_own_opset(result)


def drop_own_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Forget our domain's opset import once no node uses it (runtimes need not know it)."""
    if not any(n.domain == DOMAIN for n in model.graph.node):
        kept = [o for o in model.opset_import if o.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return model
