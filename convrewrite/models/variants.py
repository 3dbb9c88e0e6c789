"""Conv-variant topologies: ShuffleNetV2 (channel shuffles in the three spellings exporters
produce), a ResNeXt block (grouped 3x3), ShiftResNet blocks (shift between two 1x1 convs), a
ChannelNets-style block (channel-wise conv) and a depth-multiplier net."""

from __future__ import annotations

import numpy as np
import onnx

from ..ops import DOMAIN
from ..ops.shift import one_hot_depthwise_weight, shift_offsets
from .builder import LINEAR_GAIN, RESIDUAL_GAIN, GraphBuilder, T

SHUFFLE_STYLES = ("static", "dynamic", "split")


def channel_shuffle(g: GraphBuilder, x: T, groups: int, name: str, dynamic: bool = False) -> T:
    """torchvision's channel_shuffle: view [N, g, C/g, H, W], transpose(1, 2), view [N, C, H, W].
    ``dynamic`` computes the shapes at run time from Shape/Gather/Div, as TorchScript exports do."""
    per_group = x.channels // groups
    if dynamic:
        shape = g.node("Shape", [x.name], f"{name}/shape")
        dims = [g.node("Gather", [shape, g.const(f"{name}/i{i}", np.array([i], np.int64))],
                       f"{name}/dim{i}", axis=0) for i in range(4)]
        per = g.node("Div", [dims[1], g.const(f"{name}/groups", np.array([groups], np.int64))],
                     f"{name}/per_group")
        five = g.node("Concat", [dims[0], g.const(f"{name}/g", np.array([groups], np.int64)), per,
                                 dims[2], dims[3]], f"{name}/shape5", axis=0)
        four = g.node("Concat", [dims[0], g.const(f"{name}/minus1", np.array([-1], np.int64)),
                                 dims[2], dims[3]], f"{name}/shape4", axis=0)
    else:
        h, w = x.spatial
        five = g.const(f"{name}/shape5", np.array([0, groups, per_group, h, w], np.int64))
        four = g.const(f"{name}/shape4", np.array([0, x.channels, h, w], np.int64))
    y = g.node("Reshape", [x.name, five], f"{name}/reshape5")
    y = g.node("Transpose", [y], f"{name}/transpose", perm=[0, 2, 1, 3, 4])
    return T(g.node("Reshape", [y, four], f"{name}/reshape4"), x.channels, x.spatial)


def split_shuffle(g: GraphBuilder, x: T, name: str) -> tuple[T, T]:
    """Megvii's ShuffleNetV2 spelling: reshape [N*C/2, 2, H*W], permute(1, 0, 2), reshape
    [2, N, C/2, H, W], then x[0] and x[1]: the shuffle and the split in one."""
    h, w = x.spatial
    half = x.channels // 2
    y = g.node("Reshape", [x.name, g.const(f"{name}/rows", np.array([-1, 2, h * w], np.int64))],
               f"{name}/reshape3")
    y = g.node("Transpose", [y], f"{name}/transpose", perm=[1, 0, 2])
    y = g.node("Reshape", [y, g.const(f"{name}/shape5", np.array([2, -1, half, h, w], np.int64))],
               f"{name}/reshape5")
    parts = [g.node("Gather", [y, g.const(f"{name}/pick{i}", np.array(i, np.int64))],
                    f"{name}/pick{i}", axis=0) for i in range(2)]
    return T(parts[0], half, x.spatial), T(parts[1], half, x.spatial)


def _split_halves(g: GraphBuilder, x: T, name: str) -> tuple[T, T]:
    half = x.channels // 2
    a, b = g.nodes_out("Split", [x.name, g.const(f"{name}/sizes", np.array([half, half],
                                                                             np.int64))],
                       name, 2, axis=1)
    return T(a, half, x.spatial), T(b, half, x.spatial)


def _branch(g: GraphBuilder, x: T, out: int, stride: int, name: str) -> T:
    y = g.relu(g.conv(x, out, 1, name=f"{name}/pw1"), f"{name}/pw1_relu")
    y = g.conv(y, out, 3, stride, groups=out, name=f"{name}/dw", gain=LINEAR_GAIN)
    return g.relu(g.conv(y, out, 1, name=f"{name}/pw2"), f"{name}/pw2_relu")


def _shuffle_unit(g: GraphBuilder, x: T, out: int, stride: int, style: str, name: str):
    """One ShuffleNetV2 unit; with the split style the shuffle opens the next stride-1 unit."""
    half = out // 2
    if stride == 2:
        left = g.conv(x, x.channels, 3, 2, groups=x.channels, name=f"{name}/branch1_dw",
                      gain=LINEAR_GAIN)
        left = g.relu(g.conv(left, half, 1, name=f"{name}/branch1_pw"), f"{name}/branch1_relu")
        y = g.concat([left, _branch(g, x, half, 2, f"{name}/branch2")], f"{name}/concat")
    else:
        keep, work = split_shuffle(g, x, f"{name}/shuffle") if style == "split" \
            else _split_halves(g, x, f"{name}/split")
        y = g.concat([keep, _branch(g, work, half, 1, f"{name}/branch2")], f"{name}/concat")
    if style == "split":
        return y
    return channel_shuffle(g, y, 2, f"{name}/shuffle", dynamic=style == "dynamic")


def shufflenet_v2(batch: int = 1, image_size: int = 224, widths=(24, 48, 96, 192, 1024),
                  repeats=(4, 8, 4), num_classes: int = 1000, shuffle: str = "static",
                  seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """ShuffleNetV2 (x0.5 widths by default) as torchvision builds it; ``shuffle`` picks the
    exported spelling of the channel shuffle: static shapes, run-time shapes, or Megvii's split."""
    if shuffle not in SHUFFLE_STYLES:
        raise ValueError(f"shuffle must be one of {SHUFFLE_STYLES}, got {shuffle!r}")
    g = GraphBuilder(f"shufflenet_v2_{shuffle}", seed, dtype)
    x = g.input("input", 3, (image_size, image_size), batch)
    x = g.relu(g.conv(x, widths[0], 3, 2, name="conv1"), "conv1/relu")
    x = g.maxpool(x, 3, 2, 1, "maxpool")
    for stage, (out, n) in enumerate(zip(widths[1:4], repeats), start=2):
        for i in range(n):
            x = _shuffle_unit(g, x, out, 2 if i == 0 else 1, shuffle, f"stage{stage}.{i}")
    x = g.relu(g.conv(x, widths[4], 1, name="conv5"), "conv5/relu")
    g.output(g.linear(g.global_avg_pool(x, "pool"), num_classes, "fc"), "logits")
    return g.build()


def resnext_block(batch: int = 1, size: int = 28, channels: int = 256, width: int = 128,
                  cardinality: int = 32, blocks: int = 2, seed: int = 0,
                  dtype="float32") -> onnx.ModelProto:
    """ResNeXt-50 (32x4d) bottlenecks: 1x1 reduce, grouped 3x3 (``cardinality`` groups), 1x1
    expand, identity shortcut."""
    g = GraphBuilder("resnext_block", seed, dtype)
    x = g.input("input", channels, (size, size), batch)
    for b in range(blocks):
        name = f"block{b}"
        y = g.relu(g.conv(x, width, 1, name=f"{name}/reduce"), f"{name}/reduce_relu")
        y = g.relu(g.conv(y, width, 3, groups=cardinality, name=f"{name}/grouped"),
                   f"{name}/grouped_relu")
        y = g.conv(y, channels, 1, name=f"{name}/expand", gain=RESIDUAL_GAIN)
        x = g.relu(g.add(y, x, f"{name}/add"), f"{name}/relu")
    g.output(x, "features")
    return g.build()


SHIFT_FORMS_IN_MODELS = ("op", "depthwise")


def shift(g: GraphBuilder, x: T, name: str, form: str = "op", kernel_size: int = 3,
          dilation: int = 1) -> T:
    """A shift as our ``Shift`` op, or as exporters of ShiftNet write it: a depthwise conv with
    one-hot kernels."""
    if form == "op":
        out = g.node("Shift", [x.name], name, domain=DOMAIN, kernel_size=kernel_size,
                     dilation=dilation)
        return T(out, x.channels, x.spatial)
    offsets = shift_offsets(x.channels, kernel_size, dilation)
    weight = g.const(f"{name}.weight", one_hot_depthwise_weight(offsets, kernel_size, dilation,
                                                                g.dtype))
    pad = dilation * (kernel_size // 2)
    out = g.node("Conv", [x.name, weight], name, kernel_shape=[kernel_size] * 2,
                 pads=[pad] * 4, dilations=[dilation] * 2, group=x.channels)
    return T(out, x.channels, x.spatial)


def shift_resnet(batch: int = 1, size: int = 32, channels: int = 64, expansion: int = 3,
                 blocks: int = 2, form: str = "op", seed: int = 0,
                 dtype="float32") -> onnx.ModelProto:
    """ShiftResNet blocks (Wu et al. 2018): 1x1 expand, shift, 1x1 reduce, identity shortcut."""
    if form not in SHIFT_FORMS_IN_MODELS:
        raise ValueError(f"form must be one of {SHIFT_FORMS_IN_MODELS}, got {form!r}")
    g = GraphBuilder(f"shift_resnet_{form}", seed, dtype)
    x = g.input("input", channels, (size, size), batch)
    for b in range(blocks):
        name = f"block{b}"
        y = g.relu(g.conv(x, channels * expansion, 1, name=f"{name}/expand"),
                   f"{name}/expand_relu")
        y = shift(g, y, f"{name}/shift", form)
        y = g.conv(y, channels, 1, name=f"{name}/reduce", gain=RESIDUAL_GAIN)
        x = g.relu(g.add(y, x, f"{name}/add"), f"{name}/relu")
    g.output(x, "features")
    return g.build()


def channelwise_conv(g: GraphBuilder, x: T, kernel: int, stride: int, pads, name: str) -> T:
    w = g.const(f"{name}.weight", (g.rng.standard_normal(kernel) / np.sqrt(kernel))
                .astype(g.dtype))
    b = g.const(f"{name}.bias", np.array([0.01], g.dtype))
    out = g.node("ChannelwiseConv", [x.name, w, b], name, domain=DOMAIN, stride=stride,
                 pads=list(pads))
    channels = (x.channels + pads[0] + pads[1] - kernel) // stride + 1
    return T(out, channels, x.spatial)


def channelnet_block(batch: int = 1, size: int = 16, channels: int = 64, kernel: int = 8,
                     seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """ChannelNets' channel-wise conv in place of a 1x1 conv: depthwise 3x3, then a channel-wise
    conv (stride 2 over channels halves them), then a depthwise-separable conv back up."""
    g = GraphBuilder("channelnet_block", seed, dtype)
    x = g.input("input", channels, (size, size), batch)
    y = g.conv(x, channels, 3, groups=channels, name="dw1", gain=LINEAR_GAIN)
    y = g.relu(channelwise_conv(g, y, kernel, 2, ((kernel - 2) // 2, (kernel - 2) // 2), "cw"),
               "cw/relu")
    y = g.conv(y, y.channels, 3, groups=y.channels, name="dw2", gain=LINEAR_GAIN)
    y = g.relu(g.conv(y, channels, 1, name="pw"), "pw/relu")
    g.output(y, "features")
    return g.build()


def depth_multiplier_net(batch: int = 1, size: int = 32, channels: int = 16,
                         multiplier: int = 2, seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """Depthwise convs with a channel multiplier (TensorFlow's depth_multiplier, Xception-style
    entry flows), each followed by a 1x1 conv."""
    g = GraphBuilder("depth_multiplier_net", seed, dtype)
    x = g.input("input", 3, (size, size), batch)
    y = g.conv(x, 3 * multiplier, 3, groups=3, name="dw_rgb", gain=LINEAR_GAIN)
    y = g.relu(g.conv(y, channels, 1, name="pw_rgb"), "pw_rgb/relu")
    y = g.conv(y, channels * multiplier, 3, 2, groups=channels, name="dw", gain=LINEAR_GAIN)
    y = g.relu(g.conv(y, channels * 2, 1, name="pw"), "pw/relu")
    g.output(y, "features")
    return g.build()
