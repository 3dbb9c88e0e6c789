"""Nets whose conv *geometry* small engines reject: dilated (DeepLab), transposed (U-Net, DCGAN),
large kernels and a stride-4 stem."""

from __future__ import annotations

import onnx

from .builder import GraphBuilder


def deeplab_head(seed: int = 0, size: int = 33) -> onnx.ModelProto:
    """A DeepLab-v3 ASPP head: a 1x1 branch and 3x3 branches with dilations 6, 12 and 18 over
    one feature map, concatenated and projected."""
    g = GraphBuilder("deeplab_head", seed)
    x = g.input("features", 64, (size, size), 1)
    branches = [g.relu(g.conv(x, 32, 1, name="aspp.0"), "aspp.0/relu")]
    for i, rate in enumerate((6, 12, 18), start=1):
        branches.append(g.relu(g.conv(x, 32, 3, dilation=rate, name=f"aspp.{i}"),
                               f"aspp.{i}/relu"))
    y = g.relu(g.conv(g.concat(branches, "aspp/concat"), 64, 1, name="project"), "project/relu")
    g.output(g.conv(y, 21, 1, name="classifier"), "logits")
    return g.build()


def unet(seed: int = 0, size: int = 64) -> onnx.ModelProto:
    """A small U-Net: three downsampling stages, ConvTranspose 2x2 stride 2 up-convs and skip
    concatenations."""
    g = GraphBuilder("unet", seed)
    x = g.input("image", 3, (size, size), 1)
    skips = []
    for i, width in enumerate((16, 32, 64)):
        x = g.relu(g.conv(x, width, 3, name=f"down{i}/conv1"), f"down{i}/relu1")
        x = g.relu(g.conv(x, width, 3, name=f"down{i}/conv2"), f"down{i}/relu2")
        skips.append(x)
        x = g.maxpool(x, 2, 2, 0, f"down{i}/pool")
    x = g.relu(g.conv(x, 128, 3, name="bottom/conv"), "bottom/relu")
    for i, skip in reversed(list(enumerate(skips))):
        x = g.conv_transpose(x, skip.channels, kernel=2, stride=2, pad=0, name=f"up{i}/deconv")
        x = g.concat([x, skip], f"up{i}/concat")
        x = g.relu(g.conv(x, skip.channels, 3, name=f"up{i}/conv"), f"up{i}/relu")
    g.output(g.conv(x, 2, 1, name="head"), "mask")
    return g.build()


def dcgan_generator(seed: int = 0, latent: int = 100) -> onnx.ModelProto:
    """The DCGAN generator: a latent vector through ConvTranspose 4x4 layers (stride 1, then
    stride 2 with padding 1) to a 32x32 image."""
    g = GraphBuilder("dcgan_generator", seed)
    x = g.input("z", latent, (1, 1), 1)
    x = g.relu(g.conv_transpose(x, 256, 4, 1, 0, name="project"), "project/relu")
    for i, width in enumerate((128, 64)):
        x = g.relu(g.conv_transpose(x, width, 4, 2, 1, name=f"up{i}"), f"up{i}/relu")
    g.output(g.tanh(g.conv_transpose(x, 3, 4, 2, 1, name="to_rgb"), "tanh"), "image")
    return g.build()


def big_kernel_net(seed: int = 0, size: int = 64) -> onnx.ModelProto:
    """A stride-4 7x7 stem, then 5x5 and 3x3 convs: kernels and strides a 3x3 engine lacks."""
    g = GraphBuilder("big_kernel_net", seed)
    x = g.input("image", 3, (size, size), 1)
    x = g.relu(g.conv(x, 32, 7, 4, name="stem"), "stem/relu")
    x = g.relu(g.conv(x, 48, 5, name="conv5x5"), "conv5x5/relu")
    x = g.relu(g.conv(x, 48, (1, 7), pad=(0, 3), name="conv1x7"), "conv1x7/relu")
    x = g.relu(g.conv(x, 64, 3, 2, name="conv3x3"), "conv3x3/relu")
    g.output(g.linear(g.global_avg_pool(x, "pool"), 10, "fc"), "logits")
    return g.build()
