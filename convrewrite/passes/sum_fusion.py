"""Sum fusion: reorder a sum that follows a chain of partial sums so every Add has a conv operand.

An input-channel split ends in ``((c0 + c1) + c2)``; a residual block then adds the shortcut:
``(((c0 + c1) + c2) + s)``. Runtimes fuse an Add into the conv that produces one of its operands
(onnxruntime's Conv+Sum, then the following Relu too), but the last Add has no conv operand left.
Moving ``s`` to the front, ``((c0 + s) + c1) + c2``, lets every Add fuse. The sum is regrouped,
so this is a reassociating change, verified like one.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..gs_order import toposort
from .protocol import GraphPass, PassResult, RewriteContext, register_pass


def _single_use_conv_output(t: gs.Tensor) -> bool:
    return (len(t.inputs) == 1 and t.inputs[0].op == "Conv" and len(t.outputs) == 1
            and not t.outputs[0].op == "Identity")


def _chain_add(t: gs.Tensor) -> gs.Node | None:
    """The Add producing ``t`` if ``t`` is used only once (so it can be regrouped)."""
    if len(t.inputs) == 1 and t.inputs[0].op == "Add" and len(t.outputs) == 1:
        return t.inputs[0]
    return None


def _same_shape(a: gs.Tensor, b: gs.Tensor) -> bool:
    return (a.shape is not None and b.shape is not None and list(a.shape) == list(b.shape)
            and all(isinstance(d, int) for d in a.shape))


def fuse_sums(graph: gs.Graph, regroupable: set[str]) -> int:
    """Regroup Adds in place; returns how many were moved. Only partial sums named in
    ``regroupable`` (the chains a split emitted) are regrouped: the model's own sums keep their
    order, and so does a split whose target asked for a balanced tree."""
    moved = 0
    for node in list(graph.nodes):
        if node.op != "Add" or len(node.inputs) != 2:
            continue
        while True:
            a, b = node.inputs
            if _single_use_conv_output(a) or _single_use_conv_output(b):
                break                              # already fusable
            inner, extra = (_chain_add(a), b) if _chain_add(a) else (_chain_add(b), a)
            if inner is None or inner.name not in regroupable \
                    or not _same_shape(extra, node.outputs[0]):
                break
            x, c = inner.inputs
            if not _single_use_conv_output(c):
                x, c = c, x
            if not _single_use_conv_output(c) or not _same_shape(inner.outputs[0], extra):
                break
            # node = inner + extra = (x + c) + extra  ->  (x + extra) + c
            inner.inputs[0], inner.inputs[1] = x, extra
            node.inputs[0], node.inputs[1] = inner.outputs[0], c
            moved += 1
            node = inner                           # keep bubbling ``extra`` towards the front
    if moved:
        toposort(graph)
    return moved


@register_pass
class SumFusion(GraphPass):
    name = "sum_fusion"

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        moved = fuse_sums(ctx.graph, ctx.regroupable_sums)
        notes = [f"sum fusion: {moved} regroupings so that each Add has a conv operand"] \
            if moved else []
        return PassResult(ctx.graph, bool(moved), notes=notes)
