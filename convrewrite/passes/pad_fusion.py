"""Pad fusion: a zero Pad of a zero Pad becomes one Pad.

Padding lowerings put an explicit Pad before a conv; when the model already had one there (a
TensorFlow-style export pads explicitly, then convolves with no padding) the two merge. Zeros
are zeros: exact. Runs after local verification, like the other tidying passes, because it
moves the boundary between a rewrite and what came before it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..gs_order import cleanup_and_toposort
from ..build.onnx_read import constant_value
from .protocol import GraphPass, PassResult, RewriteContext, register_pass


def _zero_pads(pad: gs.Node) -> list[int] | None:
    """The pads of a constant-zero Pad over all axes, or None if it is anything else."""
    if pad.op != "Pad" or pad.attrs.get("mode", "constant") not in ("constant", b"constant"):
        return None
    values = pad.attrs.get("pads")
    if values is None and len(pad.inputs) > 1:
        values = constant_value(pad.inputs[1])
    fill = constant_value(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2].name else None
    has_axes = len(pad.inputs) > 3 and pad.inputs[3].name
    if values is None or has_axes or (fill is not None and np.any(fill != 0)):
        return None
    values = [int(v) for v in np.asarray(values).ravel()]
    return values if min(values, default=0) >= 0 else None


def fuse_pads(graph: gs.Graph, opset: int) -> int:
    """Merge each zero Pad into the zero Pad that feeds it (and feeds nothing else)."""
    merged = 0
    for outer in list(graph.nodes):
        outer_pads = _zero_pads(outer)
        if outer_pads is None or len(outer.inputs[0].inputs) != 1:
            continue
        middle = outer.inputs[0]
        inner = middle.inputs[0]
        inner_pads = _zero_pads(inner)
        if inner_pads is None or len(inner_pads) != len(outer_pads) or len(middle.outputs) != 1 \
                or any(middle is o for o in graph.outputs):
            continue
        total = np.array([a + b for a, b in zip(inner_pads, outer_pads)], dtype=np.int64)
        source = inner.inputs[0]
        if opset >= 11:
            outer.inputs[0] = source
            outer.inputs[1] = gs.Constant(f"{outer.name}.pads_merged", total)
        else:
            outer.inputs[0] = source
            outer.attrs["pads"] = [int(v) for v in total]
        merged += 1
    if merged:
        cleanup_and_toposort(graph)
    return merged


@register_pass
class PadFusion(GraphPass):
    name = "pad_fusion"

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        merged = fuse_pads(ctx.graph, ctx.opset)
        notes = [f"pad fusion: {merged} Pad pairs merged into one"] if merged else []
        return PassResult(ctx.graph, bool(merged), notes=notes)
