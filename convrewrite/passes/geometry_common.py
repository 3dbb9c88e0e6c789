"""What the geometry passes not yet on the lowering contract share: a conv node's explicit pads
(auto_pad resolved; ``plan.padding.explicit_pads`` on its spec)."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..decline import Decline
from ..plan.padding import explicit_pads as spec_pads


def explicit_pads(node: gs.Node, spec: ConvSpec) -> tuple[int, ...] | Decline:
    """The conv's begin/end pads, or why they are not known (SAME_* on a dynamic input)."""
    return spec_pads(spec)
