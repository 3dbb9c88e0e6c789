"""Export the real architectures benchmarks/vendor_placement.py judges, with random weights, as
ONNX: run *inside the torch venv* (python -m convrewrite.vendors.install torch), by path.

    python benchmarks/export_torch.py OUT_DIR [--small] [NAME ...]

One file per model, OUT_DIR/NAME.onnx, opset 17, static shapes, batch 1. ``--small`` exports at
the input sizes of SMALL (so onnx2tf and both Vela cores finish each model in minutes on a shared
2-core machine; the layer structure is the same, only the maps are smaller). Weights are seeded
(torch.manual_seed(0)), so the same torch gives the same files.
"""

import sys
from pathlib import Path

import torch
import torch.nn as nn


class UNetDecoder(nn.Module):
    """A U-Net decoder as PyTorch tutorials write it: ConvTranspose2d(k3, s2, p1, output_padding=1)
    up-convs (output exactly 2x) with skip concatenations."""

    def __init__(self, widths=(128, 64, 32, 16)):
        super().__init__()
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 3, stride=2, padding=1,
                                                    output_padding=1)
                                 for a, b in zip(widths, widths[1:]))
        self.convs = nn.ModuleList(nn.Sequential(nn.Conv2d(2 * b, b, 3, padding=1), nn.ReLU())
                                   for b in widths[1:])
        self.head = nn.Conv2d(widths[-1], 2, 1)

    def forward(self, x, s1, s2, s3):
        for up, conv, skip in zip(self.ups, self.convs, (s1, s2, s3)):
            x = conv(torch.cat([torch.relu(up(x)), skip], 1))
        return self.head(x)


class DCGANGenerator(nn.Module):
    """The DCGAN generator (Radford et al.): ConvTranspose 4x4, stride 1 then stride 2, pads 1."""

    def __init__(self, latent=100, width=64):
        super().__init__()
        layers, chans = [], [latent, width * 8, width * 4, width * 2, width]
        for i, (a, b) in enumerate(zip(chans, chans[1:])):
            layers += [nn.ConvTranspose2d(a, b, 4, 1 if i == 0 else 2, 0 if i == 0 else 1,
                                          bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


def models():
    import timm
    import torchvision.models as tv
    import torchvision.models.segmentation as seg
    import torchvision.models.video as video
    return {
        "shufflenet_v2": (lambda: tv.shufflenet_v2_x1_0(), [(1, 3, 224, 224)]),
        "r3d_18": (lambda: video.r3d_18(), [(1, 3, 8, 112, 112)]),
        "mobilevit_xxs": (lambda: timm.create_model("mobilevit_xxs", pretrained=False),
                          [(1, 3, 256, 256)]),
        "unet_decoder": (lambda: UNetDecoder(), [(1, 128, 16, 16), (1, 64, 32, 32),
                                                 (1, 32, 64, 64), (1, 16, 128, 128)]),
        "dcgan": (lambda: DCGANGenerator(), [(1, 100, 1, 1)]),
        "convnext_tiny": (lambda: tv.convnext_tiny(), [(1, 3, 224, 224)]),
        # timm's smallest ConvNeXt (3.7M parameters, the same blocks: 4x4/4 stem, 7x7 depthwise,
        # LayerNorm, GELU): onnx2tf converts its 7 TFLite variants in minutes where
        # ConvNeXt-Tiny's (114 MB of float weights) took over 20 minutes each on a shared machine.
        "convnext_atto": (lambda: timm.create_model("convnext_atto", pretrained=False),
                          [(1, 3, 224, 224)]),
        "deeplabv3_mobilenet": (lambda: _DeepLab(seg.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, aux_loss=False)), [(1, 3, 256, 256)]),
    }


# Small inputs: every model still goes through all of its stages (ConvNeXt and ShuffleNet
# downsample 32x: 64 -> 2x2; MobileViT needs multiples of 32 for its 2x2 patches after 8x).
SMALL = {"shufflenet_v2": [(1, 3, 96, 96)], "r3d_18": [(1, 3, 8, 32, 32)],
         "mobilevit_xxs": [(1, 3, 128, 128)],
         "unet_decoder": [(1, 128, 8, 8), (1, 64, 16, 16), (1, 32, 32, 32), (1, 16, 64, 64)],
         "dcgan": [(1, 100, 1, 1)], "convnext_tiny": [(1, 3, 64, 64)],
         "convnext_atto": [(1, 3, 64, 64)],
         "deeplabv3_mobilenet": [(1, 3, 128, 128)]}


class _DeepLab(nn.Module):
    """torchvision's segmentation models return a dict; export its 'out'."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    small = "--small" in sys.argv[2:]
    wanted = [a for a in sys.argv[2:] if a != "--small"]
    for name, (make, shapes) in models().items():
        if wanted and name not in wanted:
            continue
        shapes = SMALL[name] if small else shapes
        path = out / f"{name}.onnx"
        if path.is_file():
            continue
        torch.manual_seed(0)
        model = make().eval()
        args = tuple(torch.rand(*s) * 2 - 1 for s in shapes)
        names = [f"input{i}" for i in range(len(shapes))]
        torch.onnx.export(model, args, str(path.with_suffix(".tmp")), opset_version=17,
                          input_names=names, output_names=["output"], dynamo=False)
        path.with_suffix(".tmp").rename(path)
        print(f"exported {name}", flush=True)


if __name__ == "__main__":
    main()
