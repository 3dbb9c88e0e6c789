"""Real architectures on Arm Ethos-U, judged by Vela: ops and MACs on the NPU vs the CPU for the
original model and for our rewrite, and Vela's estimated inference time of both, side by side.

    python -m convrewrite.vendors.install            # onnx2tf, vela
    python -m convrewrite.vendors.install torch      # torch 2.14.1, torchvision 0.29.1, timm
    python benchmarks/vendor_placement.py [--target ethos-u55] [--only NAME ...] [--out DIR]

Models (random weights, exported by benchmarks/export_torch.py in the torch venv): ShuffleNetV2,
R3D-18 (3-D convs), MobileViT-XXS (timm), a U-Net decoder with ConvTranspose, the DCGAN
generator, ConvNeXt-Tiny, DeepLabV3 (MobileNetV3). Vela's estimate is deterministic (compiles
are byte-identical), so load on the machine does not change it; it covers NPU work only (Vela
does not time CPU ops), so a model with CPU fallback looks faster than it runs. Each model's
files stay under --out (TFLite, Vela output), so a second run reuses nothing but the exports.

Measured 2026-12-02 (Vela 5.2.0, onnx2tf 2.6.9, torch 2.14.1; ``--target ethos-u55 --only
mobilevit_xxs r3d_18``; ethos-u55-128; cells: NPU/CPU ops, convs on NPU/all, MACs on the NPU,
Vela's estimate). Vela's regor core crashes (SIGSEGV, exit -11, in 1 s; twice of twice) on the
*original* MobileViT-XXS TFLite, which ends the script there, so the rows below were compiled from
the TFLites the run left under --out, both cores, with this module's ``summarise``; r3d_18 was not
reached. The rewrite: 9 rank reductions (unfold/fold, max rank 5 -> 4), status ok.

| mobilevit_xxs | original | rewritten |
|---|---|---|
| regor | Vela crashes | 509/42, 35/35, 100.00% of 407M, 275.38 ms |
| legacy | 353/198, 35/35, 80.81% of 407M, 93.79 ms | 398/153, 35/35, 80.81% of 407M, 94.66 ms |

Still on the CPU after the rewrite: regor 42 MEAN (LayerNorm's reduction over depth of
[1, 4, 256, 64], [1, 4, 64, 80] and [1, 4, 16, 96] maps: Vela reduces depth only where h, w or c
is 1); legacy 54 TRANSPOSE, 42 MEAN, 39 MUL, 18 BATCH_MATMUL (the original's 36
RESHAPE and 27 STRIDED_SLICE are gone, its 36 TRANSPOSE became 54).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import onnx

import convrewrite as cr
from convrewrite.vendors.env import TORCH, vendor_dir
from convrewrite.vendors.vela import vendor_check

HERE = Path(__file__).resolve().parent
MODELS = ["shufflenet_v2", "r3d_18", "mobilevit_xxs", "unet_decoder", "dcgan", "convnext_tiny",
          "deeplabv3_mobilenet"]


def export(names: list[str], folder: Path) -> None:
    python = TORCH.require()
    subprocess.run([str(python), str(HERE / "export_torch.py"), str(folder), *names],
                   check=True)


def summarise(result: dict) -> dict:
    if result["rejected"]:
        return {"rejected": result["rejected"]}
    npu, cpu = result["npu"], result["cpu"]
    total = npu["macs"] + cpu["macs"]
    convs = npu["convs"] + cpu["convs"]
    return {"npu_ops": npu["ops"], "cpu_ops": cpu["ops"], "convs_npu": npu["convs"],
            "convs": convs, "macs_npu_share": npu["macs"] / total if total else 1.0,
            "macs": total, "time_s": result["inference_time_s"]}


def cell(s: dict) -> str:
    if "rejected" in s:
        return "REJECTED"
    return (f"{s['npu_ops']}/{s['cpu_ops']} | {s['convs_npu']}/{s['convs']} | "
            f"{100 * s['macs_npu_share']:.2f}% of {s['macs'] / 1e6:.0f}M | "
            f"{s['time_s'] * 1e3:.2f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="ethos-u55")
    p.add_argument("--only", nargs="*", default=MODELS)
    p.add_argument("--out", type=Path, default=vendor_dir() / "placement")
    args = p.parse_args()
    exports = args.out / "onnx"
    export(args.only, exports)
    target = cr.load_target(args.target)
    rows = []
    for name in args.only:
        started = time.monotonic()
        original = onnx.load(exports / f"{name}.onnx")
        rewritten, report = cr.rewrite(original, target)
        section = vendor_check(original, rewritten, target, out_dir=args.out / args.target / name)
        core = target.vendor.core
        before = summarise(section["models"]["original"][core])
        after = summarise(section["models"].get("rewritten", section["models"]["original"])[core])
        cpu_reasons = sorted({f"{op['type']}: {op['reason']}"
                              for op in section["models"].get("rewritten", section["models"][
                                  "original"])[core]["cpu_ops"]})
        rows.append({"model": name, "status": report.status, "rewrites": len(report.records),
                     "before": before, "after": after, "cpu_after": cpu_reasons,
                     "seconds": time.monotonic() - started})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.target} ({target.vendor.accelerator_config}, Vela {core}); cells: NPU/CPU "
          "ops | convs on NPU/all | MACs on the NPU | Vela's estimate (NPU work only)\n")
    print("| model | rewrites | original | rewritten | estimate rewritten/original |")
    print("|---|---|---|---|---|")
    for r in rows:
        b, a = r["before"], r["after"]
        ratio = "-" if "rejected" in b or "rejected" in a or not b["time_s"] else \
            f"{a['time_s'] / b['time_s']:.2f}x"
        print(f"| {r['model']} | {r['rewrites']} ({r['status']}) | {cell(b)} | {cell(a)} | "
              f"{ratio} |")
    for r in rows:
        for reason in r["cpu_after"]:
            print(f"  {r['model']}: still on the CPU: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
