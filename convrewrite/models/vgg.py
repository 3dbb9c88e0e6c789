"""VGG-16's conv stack (13 3x3 convs up to 512 channels), with global pooling and one linear
classifier instead of the 25088x4096 FC layers, which only add 100 M parameters to carry around."""

from __future__ import annotations

import onnx

from .builder import GraphBuilder

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(batch: int = 1, image_size: int = 224, num_classes: int = 1000,
          seed: int = 0, dtype="float32") -> onnx.ModelProto:
    """13 3x3 convs, 64 to 512 channels; image_size at least 32 (five 2x2 max pools)."""
    g = GraphBuilder("vgg16", seed, dtype)
    x = g.input("input", 3, (image_size, image_size), batch)
    conv_index = 0
    for item in VGG16:
        if item == "M":
            x = g.maxpool(x, 2, 2, 0, f"pool{conv_index}")
            continue
        x = g.relu(g.conv(x, item, 3, name=f"features.{conv_index}"), f"relu{conv_index}")
        conv_index += 1
    x = g.linear(g.global_avg_pool(x, "avgpool"), num_classes, "classifier")
    g.output(x, "logits")
    return g.build()
