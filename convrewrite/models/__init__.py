"""Programmatic ONNX builders of real topologies (seeded weights, no downloads), used by the demo,
the tests and the benchmarks."""

from .geometry_nets import big_kernel_net, dcgan_generator, deeplab_head, unet
from .mobilenet import mobilenet_v2
from .resnet import resnet18, resnet50
from .small import conv1d_net, conv3d_net, demo_wide
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
}

__all__ = ["BUILDERS", *BUILDERS]
