"""MobileNetV2 as torchvision builds it: inverted residuals (1x1 expand, 3x3 depthwise, 1x1
project), ReLU6 as Clip, residual Adds where the shape allows, and a final 1x1 conv to 1280."""

from __future__ import annotations

import onnx

from .builder import LINEAR_GAIN, GraphBuilder, T

# expansion t, output channels c, repeats n, first stride s
INVERTED_RESIDUALS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1)]


def _inverted_residual(g: GraphBuilder, x: T, expand: int, out: int, stride: int,
                       name: str) -> T:
    hidden = x.channels * expand
    y = x
    if expand != 1:
        y = g.relu6(g.conv(y, hidden, 1, name=f"{name}/expand"), f"{name}/expand_relu6")
    y = g.relu6(g.conv(y, hidden, 3, stride, groups=hidden, name=f"{name}/depthwise"),
                f"{name}/depthwise_relu6")
    y = g.conv(y, out, 1, name=f"{name}/project", gain=LINEAR_GAIN)
    if stride == 1 and x.channels == out:
        y = g.add(y, x, f"{name}/add")
    return y


def mobilenet_v2(batch: int = 1, image_size: int = 224, num_classes: int = 1000,
                 seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """52 convs, 17 of them depthwise (up to 960 channels)."""
    g = GraphBuilder("mobilenet_v2", seed, dtype)
    x = g.input("input", 3, (image_size, image_size), batch)
    x = g.relu6(g.conv(x, 32, 3, 2, name="features.0"), "features.0/relu6")
    index = 1
    for t, c, n, s in INVERTED_RESIDUALS:
        for i in range(n):
            x = _inverted_residual(g, x, t, c, s if i == 0 else 1, f"features.{index}")
            index += 1
    x = g.relu6(g.conv(x, 1280, 1, name=f"features.{index}"), f"features.{index}/relu6")
    x = g.linear(g.global_avg_pool(x, "avgpool"), num_classes, "classifier")
    g.output(x, "logits")
    return g.build()
