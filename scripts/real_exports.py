"""Export real PyTorch models to ONNX the way a new user would, for scripts/real_export_table.py.

Needs torch, torchvision and onnx (+ onnxscript for the dynamo exporter; timm optional) in the
python that runs it -- NOT the project's venv, which does not depend on torch:

    python3 -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1 timm onnx onnxscript
    /work/venv-torch/bin/python scripts/real_exports.py OUT_DIR [--only NAME ...] [--no-dynamo]

Also, where installed (each optional, a missing one skipped and named): ultralytics YOLOv8n /
YOLO11n / YOLOv8n-seg from their yaml configs at 320, transformers ConvNext / MobileViT /
SegFormer / ResNet from small configs, diffusers UNet2DModel and AutoencoderKL with tiny
block_out_channels, effdet tf_efficientdet_d0 at 256 (pip install ultralytics transformers
diffusers effdet; scripts/real_export_table.py --target-file adds a target YAML of one's own).

Random weights (nothing downloaded), small inputs (64x64, 96x96; video 8x32x32) so the files stay
small and the table runs in minutes. Every model goes through the TorchScript exporter
(dynamo=False, opset 17, dynamic batch axis) and the dynamo exporter; resnet18 also in fp16.
A failing export is recorded (OUT_DIR/manifest.json, 'error') and the rest carry on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        sys.exit(f"real_exports.py needs {module!r} (pip install torch torchvision onnx onnxscript"
                 " [timm]) in the python running it; the project's venv does not have torch")


def _nets(torch):
    """Small hand-written nets that torchvision lacks: 1-D audio convs, a DCGAN generator."""
    nn = torch.nn

    class Audio1d(nn.Module):
        """M5-style raw-waveform classifier (long stride-4 first conv, pools, 1-D convs)."""

        def __init__(self):
            super().__init__()
            layers, c = [nn.Conv1d(1, 32, 80, stride=4), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.MaxPool1d(4)], 32
            for out in (32, 64, 64):
                layers += [nn.Conv1d(c, out, 3, padding=1), nn.BatchNorm1d(out), nn.ReLU(),
                           nn.MaxPool1d(4)]
                c = out
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(c, 35)

        def forward(self, x):
            return self.fc(self.features(x).mean(-1))

    class DCGAN(nn.Module):
        """The DCGAN generator: 100-d noise to 3x64x64 through strided ConvTranspose2d."""

        def __init__(self):
            super().__init__()
            layers, c = [], 100
            for out, stride, pad in ((256, 1, 0), (128, 2, 1), (64, 2, 1), (32, 2, 1)):
                layers += [nn.ConvTranspose2d(c, out, 4, stride, pad, bias=False),
                           nn.BatchNorm2d(out), nn.ReLU()]
                c = out
            self.net = nn.Sequential(*layers, nn.ConvTranspose2d(c, 3, 4, 2, 1), nn.Tanh())

        def forward(self, x):
            return self.net(x)

    return Audio1d, DCGAN


def models(torch):
    """name -> (constructor, input shape). Constructors build random-weight models lazily."""
    from torchvision import models as tv
    from torchvision.models import segmentation as seg
    from torchvision.models import video

    class Seg(torch.nn.Module):
        """Segmentation models return a dict; the exporters want a tensor."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)["out"]

    Audio1d, DCGAN = _nets(torch)
    table = {
        "resnet18": (tv.resnet18, (1, 3, 64, 64)),
        "mobilenet_v3_small": (tv.mobilenet_v3_small, (1, 3, 64, 64)),
        "shufflenet_v2_x0_5": (tv.shufflenet_v2_x0_5, (1, 3, 64, 64)),
        "squeezenet1_0": (tv.squeezenet1_0, (1, 3, 96, 96)),
        "googlenet": (lambda: tv.googlenet(aux_logits=False, init_weights=True), (1, 3, 96, 96)),
        "densenet121": (tv.densenet121, (1, 3, 64, 64)),
        "efficientnet_b0": (tv.efficientnet_b0, (1, 3, 64, 64)),
        "convnext_tiny": (tv.convnext_tiny, (1, 3, 64, 64)),
        "regnet_y_400mf": (tv.regnet_y_400mf, (1, 3, 64, 64)),
        "r3d_18": (video.r3d_18, (1, 3, 8, 32, 32)),
        "deeplabv3_mobilenet_v3_large": (
            lambda: Seg(seg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)),
            (1, 3, 96, 96)),
        "fcn_resnet50": (                      # dilated convs (output stride 8)
            lambda: Seg(seg.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=False)),
            (1, 3, 96, 96)),
        "lraspp_mobilenet_v3_large": (
            lambda: Seg(seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)),
            (1, 3, 96, 96)),
        "audio1d": (Audio1d, (1, 1, 16000)),
        "dcgan": (DCGAN, (1, 100, 1, 1)),
    }
    try:
        import timm
    except ImportError:
        print("timm not installed: skipping mobilevit_xxs, resnest14d", file=sys.stderr)
    else:
        for name in ("mobilevit_xxs", "resnest14d"):
            table[name] = ((lambda n=name: timm.create_model(n, pretrained=False)),
                           (1, 3, 64, 64))
    table.update(_more_models(torch))
    return table


class _First:
    """Wraps a model whose forward returns a tuple/list/dict/ModelOutput: the exporters get the
    first tensor (YOLO's decoded boxes, a transformers model's last hidden state, a UNet's sample)."""

    @staticmethod
    def first(out):
        import torch

        while not isinstance(out, torch.Tensor):
            if isinstance(out, dict):
                out = next(iter(out.values()))
            elif hasattr(out, "to_tuple"):
                out = out.to_tuple()[0]
            elif hasattr(out, "sample"):
                out = out.sample
            else:
                out = out[0]
        return out


def _more_models(torch):
    """ultralytics, transformers, diffusers and effdet models built from small configs, random
    weights (nothing downloaded). Each package is optional: a missing one is skipped, named."""
    nn = torch.nn
    table = {}

    class Wrap(nn.Module):
        def __init__(self, inner, call=None):
            super().__init__()
            self.inner = inner
            self.call = call

        def forward(self, x):
            return _First.first(self.call(self.inner, x) if self.call else self.inner(x))

    try:
        import ultralytics  # noqa: F401
    except ImportError:
        print("ultralytics not installed: skipping yolov8n, yolo11n", file=sys.stderr)
    else:
        def yolo(cfg):
            from ultralytics.nn.tasks import DetectionModel, SegmentationModel

            from ultralytics.nn.tasks import OBBModel, PoseModel

            cls = SegmentationModel if "-seg" in cfg else PoseModel if "-pose" in cfg else \
                OBBModel if "-obb" in cfg else DetectionModel
            m = cls(cfg, ch=3, nc=80, verbose=False)
            m.fuse(verbose=False) if hasattr(m, "fuse") else None
            for mod in m.modules():         # what ultralytics' own ONNX exporter sets
                if hasattr(mod, "export"):
                    mod.export = True
                if hasattr(mod, "format"):
                    mod.format = "onnx"
            return Wrap(m)

        for name, cfg in (("yolov8n", "yolov8n.yaml"), ("yolo11n", "yolo11n.yaml"),
                          ("yolov8n_seg", "yolov8n-seg.yaml"), ("yolov8n_pose", "yolov8n-pose.yaml"),
                          ("yolo11n_obb", "yolo11n-obb.yaml")):
            table[name] = ((lambda c=cfg: yolo(c)), (1, 3, 320, 320))
    try:
        import transformers as hf
    except ImportError:
        print("transformers not installed: skipping hf_convnext, hf_mobilevit, hf_segformer",
              file=sys.stderr)
    else:
        table["hf_convnext"] = ((lambda: Wrap(hf.ConvNextModel(hf.ConvNextConfig(
            hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1])))), (1, 3, 64, 64))
        table["hf_mobilevit"] = ((lambda: Wrap(hf.MobileViTModel(hf.MobileViTConfig(
            image_size=64, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 8, 16, 24, 32, 48, 64],
            num_attention_heads=2)))), (1, 3, 64, 64))
        table["hf_segformer"] = ((lambda: Wrap(hf.SegformerForSemanticSegmentation(
            hf.SegformerConfig(hidden_sizes=[16, 32, 64, 128], decoder_hidden_size=64,
                               num_labels=10, depths=[1, 1, 1, 1])))), (1, 3, 64, 64))
        table["hf_swin"] = ((lambda: Wrap(hf.SwinModel(hf.SwinConfig(
            image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
            window_size=4)))), (1, 3, 64, 64))         # window partition: 6-D views
        table["hf_resnet"] = ((lambda: Wrap(hf.ResNetModel(hf.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])))),
            (1, 3, 64, 64))
    try:
        import diffusers
    except ImportError:
        print("diffusers not installed: skipping unet2d, autoencoder_kl", file=sys.stderr)
    else:
        def unet():
            m = diffusers.UNet2DModel(sample_size=32, in_channels=3, out_channels=3,
                                      block_out_channels=(16, 32), layers_per_block=1,
                                      norm_num_groups=8,
                                      down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                      up_block_types=("AttnUpBlock2D", "UpBlock2D"))
            return Wrap(m, lambda inner, x: inner(x, 10))     # one fixed timestep

        def vae():
            m = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                                        block_out_channels=(16, 32), layers_per_block=1,
                                        norm_num_groups=8,
                                        down_block_types=("DownEncoderBlock2D",) * 2,
                                        up_block_types=("UpDecoderBlock2D",) * 2)
            return Wrap(m, lambda inner, x: inner.decode(inner.encode(x).latent_dist.mode()))

        table["unet2d"] = (unet, (1, 3, 32, 32))
        table["autoencoder_kl"] = (vae, (1, 3, 64, 64))
    try:
        import effdet
    except ImportError:
        print("effdet not installed: skipping tf_efficientdet_d0", file=sys.stderr)
    else:
        def det():
            cfg = effdet.get_efficientdet_config("tf_efficientdet_d0")
            cfg.image_size = (256, 256)
            # class and box outputs of every level, flattened into one [N, -1] tensor
            return Wrap(effdet.EfficientDet(cfg, pretrained_backbone=False), lambda inner, x: torch.cat(
                [t.flatten(1) for outs in inner(x) for t in outs], 1))

        table["tf_efficientdet_d0"] = (det, (1, 3, 256, 256))
    return table


def export(torch, model, shape, path: Path, dynamo: bool, half: bool = False) -> None:
    x = torch.randn(*shape)
    if half:
        model, x = model.half(), x.half()
    kwargs = {"dynamo": dynamo, "input_names": ["x"], "output_names": ["y"]}
    if dynamo:
        kwargs["external_data"] = False
    else:
        kwargs.update(opset_version=17, dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    with torch.no_grad():
        torch.onnx.export(model.eval(), (x,), str(path), **kwargs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the .onnx files and manifest.json")
    ap.add_argument("--only", nargs="*", help="export only these model names")
    ap.add_argument("--no-dynamo", action="store_true", help="TorchScript exporter only")
    args = ap.parse_args(argv)
    torch = _need("torch")
    _need("torchvision")
    _need("onnx")
    args.out.mkdir(parents=True, exist_ok=True)
    table = models(torch)
    # every TorchScript export first (the table can start on them), then the dynamo ones
    jobs = [(n, e, False) for e in ("ts", "dynamo") for n in table]
    jobs.insert(1, ("resnet18", "ts", True))
    old = args.out / "manifest.json"
    done = json.loads(old.read_text())["exports"] if old.exists() else []
    manifest = [e for e in done if not args.only or e["model"] not in args.only]
    for name, exporter, half in jobs:
        if args.only and name not in args.only or exporter == "dynamo" and args.no_dynamo:
            continue
        ctor, shape = table[name]
        stem = f"{name}{'.fp16' if half else ''}.{exporter}"
        path = args.out / f"{stem}.onnx"
        entry = {"name": stem, "model": name, "exporter": exporter, "fp16": half,
                 "input_shape": list(shape), "file": path.name}
        t0 = time.time()
        try:
            torch.manual_seed(0)
            export(torch, ctor(), shape, path, exporter == "dynamo", half)
            entry["error"] = None
        except Exception as exc:  # keep going: one model failing to export is a table row
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            entry["error"] = last.splitlines()[0][:300]
            path.unlink(missing_ok=True)
        entry["seconds"] = round(time.time() - t0, 1)
        manifest.append(entry)
        print(f"{stem:45s} {'FAILED ' + entry['error'] if entry['error'] else 'ok'}"
              f" ({entry['seconds']} s)", flush=True)
        (args.out / "manifest.json").write_text(json.dumps({
            "torch": torch.__version__, "torchvision": __import__("torchvision").__version__,
            "onnx": __import__("onnx").__version__, "exports": manifest}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
