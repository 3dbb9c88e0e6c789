"""Programmatic ONNX builders of real topologies (seeded weights, no downloads), used by the demo,
the tests and the benchmarks."""

from .geometry_nets import big_kernel_net, dcgan_generator, deeplab_head, unet
from .mobilenet import mobilenet_v2
from .resnet import resnet18, resnet50
from .small import conv1d_net, conv3d_net, demo_wide
from .variants import (channelnet_block, depth_multiplier_net, resnext_block, shift_resnet,
                       shufflenet_v2)
from .vgg import vgg16

BUILDERS = {
    "demo_wide": demo_wide,
    "conv1d_net": conv1d_net,
    "conv3d_net": conv3d_net,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "mobilenet_v2": mobilenet_v2,
    "deeplab_head": deeplab_head,
    "unet": unet,
    "dcgan_generator": dcgan_generator,
    "big_kernel_net": big_kernel_net,
    "shufflenet_v2": shufflenet_v2,
    "resnext_block": resnext_block,
    "shift_resnet": shift_resnet,
    "channelnet_block": channelnet_block,
    "depth_multiplier_net": depth_multiplier_net,
}

__all__ = ["BUILDERS", *BUILDERS]
