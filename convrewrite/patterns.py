"""Patterns worth naming in the report, though no rule asks to rewrite them."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .conv import dims_text
from .build.onnx_read import spec_of
from .decline import Decline

ELEMENTWISE = {"Relu", "Clip", "BatchNormalization", "HardSwish", "HardSigmoid", "Sigmoid",
               "LeakyRelu", "PRelu", "Identity"}


def _through_elementwise(tensor: gs.Tensor) -> list[gs.Node]:
    """The nodes that read ``tensor``, looking through activations and per-channel affine ops."""
    found = []
    for consumer in tensor.outputs:
        if consumer.op in ELEMENTWISE and consumer.outputs:
            found += _through_elementwise(consumer.outputs[0])
        else:
            found.append(consumer)
    return found


def depthwise_separable_pairs(graph: gs.Graph) -> list[str]:
    """Depthwise conv followed (through activations) by a dense 1x1 conv: MobileNet's
    depthwise-separable conv."""
    found = []
    for node in graph.nodes:
        if node.op != "Conv" or not node.outputs:
            continue
        spec = spec_of(node)
        if isinstance(spec, Decline) or spec.group_form != "depthwise" or spec.depth_multiplier != 1:
            continue
        for nxt in _through_elementwise(node.outputs[0]):
            if nxt.op != "Conv":
                continue
            pointwise = spec_of(nxt)
            if not isinstance(pointwise, Decline) and pointwise.groups == 1 \
                    and all(k == 1 for k in pointwise.kernel_shape):
                found.append(f"depthwise-separable: {node.name!r} "
                             f"({dims_text(spec.kernel_shape)} depthwise, "
                             f"{spec.in_channels} ch) -> {nxt.name!r} (1x1, "
                             f"{pointwise.out_channels} out)")
    return found
