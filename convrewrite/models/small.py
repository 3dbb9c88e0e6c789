"""Small nets that run in milliseconds but have the convs small NPUs reject: the built-in demo
model, and 1-D and 3-D nets."""

from __future__ import annotations

import onnx

from .builder import LINEAR_GAIN, GraphBuilder


def demo_wide(seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """A 32x32 image net whose middle is too wide for a small NPU: convs with 2048 input and 1536
    output channels, a grouped conv (4 groups of 384 channels: one group alone is over a 256
    limit), a 1536-channel depthwise conv, a residual Add, then pooling and a classifier (about
    52 MB of weights; a few ms on onnxruntime CPU)."""
    g = GraphBuilder("demo_wide", seed, dtype)
    x = g.input("image", 3, (32, 32), 1)
    x = g.relu(g.conv(x, 64, 3, 2, name="stem"), "stem_relu")                      # 16x16
    x = g.relu(g.conv(x, 256, 3, 2, name="stage1/conv"), "stage1/relu")             # 8x8
    wide = g.relu(g.conv(x, 2048, 1, name="stage2/expand"), "stage2/expand_relu")
    y = g.relu(g.conv(wide, 1536, 1, name="stage2/reduce", gain=LINEAR_GAIN), "stage2/relu")
    y = g.relu(g.conv(y, 1536, 3, groups=4, name="stage2/grouped"), "stage2/grouped_relu")
    y = g.relu(g.conv(y, 1536, 3, groups=1536, name="stage2/depthwise"), "stage2/dw_relu")
    y = g.conv(y, 2048, 1, name="stage2/project", gain=LINEAR_GAIN)
    x = g.relu(g.add(y, wide, "stage2/add"), "stage2/out_relu")
    x = g.relu(g.conv(x, 512, 1, name="stage3/reduce"), "stage3/relu")
    g.output(g.linear(g.global_avg_pool(x, "pool"), 10, "classifier"), "logits")
    return g.build()


def conv1d_net(seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """A 1-D (audio/sequence) conv net on [1, 64, 100] with a 1280-channel conv."""
    g = GraphBuilder("conv1d_net", seed, dtype)
    x = g.input("signal", 64, (100,), 1)
    x = g.relu(g.conv(x, 256, 5, name="conv1"), "relu1")
    x = g.relu(g.conv(x, 1280, 3, 2, name="conv2"), "relu2")
    x = g.relu(g.conv(x, 512, 3, groups=4, name="conv3"), "relu3")
    x = g.relu(g.conv(x, 384, 1, name="conv4"), "relu4")
    g.output(g.linear(g.global_avg_pool(x, "pool"), 12, "head"), "logits")
    return g.build()


def conv3d_net(seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """A 3-D (video/volume) conv net on [1, 4, 8, 16, 16] with a 640-channel conv."""
    g = GraphBuilder("conv3d_net", seed, dtype)
    x = g.input("volume", 4, (8, 16, 16), 1)
    x = g.relu(g.conv(x, 64, 3, name="conv1"), "relu1")
    x = g.relu(g.conv(x, 640, 3, (1, 2, 2), name="conv2"), "relu2")
    x = g.relu(g.conv(x, 320, 1, name="conv3"), "relu3")
    x = g.relu(g.conv(x, 320, 3, groups=320, name="conv4"), "relu4")
    g.output(g.linear(g.global_avg_pool(x, "pool"), 5, "head"), "logits")
    return g.build()
