"""ResNet topologies as torchvision builds them (v1.5: the stride sits on the 3x3 conv), with
BatchNorm folded into conv biases, as exported models usually are after optimisation."""

from __future__ import annotations

import onnx

from .builder import LINEAR_GAIN, RESIDUAL_GAIN, GraphBuilder, T


def _shortcut(g: GraphBuilder, x: T, channels: int, stride: int, name: str) -> T:
    """The identity, or a strided 1x1 projection where the block changes shape."""
    if stride == 1 and x.channels == channels:
        return x
    return g.conv(x, channels, 1, stride, name=f"{name}/downsample", gain=LINEAR_GAIN)


def _bottleneck(g: GraphBuilder, x: T, width: int, stride: int, name: str) -> T:
    y = g.relu(g.conv(x, width, 1, name=f"{name}/conv1"), f"{name}/relu1")
    y = g.relu(g.conv(y, width, 3, stride, name=f"{name}/conv2"), f"{name}/relu2")
    y = g.conv(y, width * 4, 1, name=f"{name}/conv3", gain=RESIDUAL_GAIN)
    return g.relu(g.add(y, _shortcut(g, x, width * 4, stride, name), f"{name}/add"),
                  f"{name}/relu3")


def _basic(g: GraphBuilder, x: T, width: int, stride: int, name: str) -> T:
    y = g.relu(g.conv(x, width, 3, stride, name=f"{name}/conv1"), f"{name}/relu1")
    y = g.conv(y, width, 3, name=f"{name}/conv2", gain=RESIDUAL_GAIN)
    return g.relu(g.add(y, _shortcut(g, x, width, stride, name), f"{name}/add"),
                  f"{name}/relu2")


def _resnet(name: str, block, layers: list[int], batch, image_size: int, num_classes: int,
            seed: int, dtype) -> onnx.ModelProto:
    g = GraphBuilder(name, seed, dtype)
    x = g.input("input", 3, (image_size, image_size), batch)
    x = g.relu(g.conv(x, 64, 7, 2, name="conv1"), "relu")
    x = g.maxpool(x, 3, 2, 1, "maxpool")
    for stage, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 1 else 1
            x = block(g, x, width, stride, f"layer{stage}.{b}")
    x = g.linear(g.global_avg_pool(x, "avgpool"), num_classes, "fc")
    g.output(x, "logits")
    return g.build()


def resnet50(batch: int = 1, image_size: int = 224, num_classes: int = 1000,
             dynamic_batch: bool = False, seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """53 convs; the last stage has the 2048-channel convs that small NPUs reject."""
    return _resnet("resnet50", _bottleneck, [3, 4, 6, 3], "N" if dynamic_batch else batch,
                   image_size, num_classes, seed, dtype)


def resnet18(batch: int = 1, image_size: int = 224, num_classes: int = 1000,
             dynamic_batch: bool = False, seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """20 convs (basic blocks), up to 512 channels."""
    return _resnet("resnet18", _basic, [2, 2, 2, 2], "N" if dynamic_batch else batch,
                   image_size, num_classes, seed, dtype)
