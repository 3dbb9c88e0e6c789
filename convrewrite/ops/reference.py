"""Our domain's ops replaced by their standard-ONNX definitions (each op module registers its own
with ``ops.register_reference``), so that onnxruntime can run the original side of every check.
Each is the op's definition written literally (a Shift as the depthwise conv with one-hot
kernels; a ChannelwiseConv as the 3-D conv over (C, spatial) it is), never the lowering a pass
emits for a target."""

from __future__ import annotations

import onnx

from ..gs_graph import from_graph, to_graph
from ..naming import Names
from . import DOMAIN, REFERENCES, channelwise, shift, sparse_conv  # noqa: F401 - they register


def has_own_ops(model: onnx.ModelProto) -> bool:
    return any(n.domain == DOMAIN and n.op_type in REFERENCES for n in model.graph.node)


def standard_reference(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each of our ops replaced by its literal standard-ONNX definition (the model
    itself when it has none)."""
    if not has_own_ops(model):
        return model
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
