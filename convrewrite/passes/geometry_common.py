"""What the geometry passes share: explicit pads for a conv (auto_pad resolved) and the checks
that a conv can be rebuilt at all."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..decline import Decline
from ..conv import effective_pads


def explicit_pads(node: gs.Node, spec: ConvSpec) -> tuple[int, ...] | Decline:
    """The conv's begin/end pads, or why they are not known (SAME_* on a dynamic input)."""
    if node.op != "Conv":
        return Decline(f"{node.op} is not lowered by this pass yet (only Conv)")
    pads = effective_pads(spec)
    if pads is None:
        return Decline(f"auto_pad {spec.auto_pad} needs a static input size to resolve")
    return pads
