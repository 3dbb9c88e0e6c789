"""Real architectures on Arm Ethos-U, judged by Vela: ops and MACs on the NPU vs the CPU for the
original model and for our rewrite, and Vela's estimated inference time of both, side by side.

    python -m convrewrite.vendors.install            # onnx2tf, vela
    python -m convrewrite.vendors.install torch      # torch 2.14.1, torchvision 0.29.1, timm
    python benchmarks/vendor_placement.py [--target ethos-u55] [--only NAME ...] [--out DIR]
        [--onnx NAME=PATH ...]        # judge a given export instead of exporting NAME
    python benchmarks/vendor_placement.py --only builtin:deeplab_head   # a convrewrite.models net
    python benchmarks/vendor_placement.py --small --cores regor   # small inputs, one core: the
        # layer structure of each model at export_torch.SMALL's sizes, minutes per model

Models (random weights, exported by benchmarks/export_torch.py in the torch venv): ShuffleNetV2,
R3D-18 (3-D convs), MobileViT-XXS (timm), a U-Net decoder with ConvTranspose, the DCGAN
generator, ConvNeXt-Tiny, DeepLabV3 (MobileNetV3). Vela's estimate is deterministic (compiles
are byte-identical), so load on the machine does not change it; it covers NPU work only (Vela
does not time CPU ops), so a model with CPU fallback looks faster than it runs: the "like for
like" column compares Vela's per-layer cycles over the parts the original ran wholly on the NPU
(convrewrite/vendors/like_for_like.py), then says what the original ran on the CPU (ops, MACs)
and what the rewrite spends on it on the NPU, and the CPU ops left. Each model's files stay under
--out (TFLite, Vela output); a second run reuses each TFLite made from the same model and
calibration (job.sha256) and runs Vela again (e.g. ``--cores legacy`` after a regor run).
A failure stays in its cell and the run goes on: Vela crashing on one model and core is printed
as "vela crashed (signal N)", a model onnx2tf writes no int8 TFLite for as "no int8 TFLite:
<onnx2tf's reason>", a rewrite error as the row's error.

Measured 2026-12-02 (Vela 5.2.0, onnx2tf 2.6.9, torch 2.14.1; ``--target ethos-u55 --only
mobilevit_xxs r3d_18``; ethos-u55-128; cells: NPU/CPU ops, convs on NPU/all, MACs on the NPU,
Vela's estimate). Vela's regor core crashes (SIGSEGV, exit -11, in 1 s; twice of twice) on the
*original* MobileViT-XXS TFLite, which then ended the script (now it is that cell's result), so
the rows below were compiled from the TFLites the run left under --out, both cores, with this
module's ``summarise``; r3d_18 was not reached then. The rewrite: 9 rank reductions
(unfold/fold, max rank 5 -> 4), status ok.

| mobilevit_xxs | original | rewritten |
|---|---|---|
| regor | Vela crashes | 509/42, 35/35, 100.00% of 407M, 275.38 ms |
| legacy | 353/198, 35/35, 80.81% of 407M, 93.79 ms | 398/153, 35/35, 80.81% of 407M, 94.66 ms |

Still on the CPU after the rewrite: regor 42 MEAN (LayerNorm's reduction over depth of
[1, 4, 256, 64], [1, 4, 64, 80] and [1, 4, 16, 96] maps: Vela reduces depth only where h, w or c
is 1); legacy 54 TRANSPOSE, 42 MEAN, 39 MUL, 18 BATCH_MATMUL (the original's 36
RESHAPE and 27 STRIDED_SLICE are gone, its 36 TRANSPOSE became 54).

Measured 2026-12-02 at 7b7b70d (same versions; ``--only builtin:deeplab_head --onnx
r3d_18=/work/exports/r3d_18.ts.onnx deeplabv3_mobilenet=... convnext_tiny=...``; the /work/exports
TorchScript exports are small-input: r3d_18 8x32x32, DeepLabV3 96x96, ConvNeXt 64x64):

| model | core | rewrites | original | rewritten | estimate rewritten/original |
|---|---|---|---|---|---|
| builtin:deeplab_head | regor | 0 (ok) | 7/0, 6/6, 100.00% of 73M, 21.17 ms | same model | 1.00x |
| builtin:deeplab_head | legacy | 0 (ok) | 7/0, 6/6, 100.00% of 73M, 26.49 ms | same model | 1.00x |
| r3d_18 | regor | 20 | 23/60, 0/20, 0.01%, 4.32 ms | 356/0, 54/54, 100.00%, 126.42 ms | 29.29x |
| r3d_18 | legacy | 20 | 0/83, 0/20, 0.00%, 0.00 ms | 205/151, 13/54, 6.01%, 60.67 ms | - |

(r3d_18: 1661M MACs, status ok; the estimate is NPU work only: the original, convs on CPU, "4 ms".)
CPU ops and Vela's reasons: r3d_18 original, regor: 20 CONV_3D and 20 DEQUANTIZE "Unsupported
opType", 20 QUANTIZE "Operation has tensor with unsupported DataType Float32" (onnx2tf runs
CONV_3D in float between them); legacy: all 83 ops, "Input(s) and Output tensors must not be
greater than 4D". r3d_18 rewritten (the 3-D convs lowered to 2-D, depth folded into the batch):
regor none; legacy 151 (41 CONV_2D, ADD, TRANSPOSE, PAD) "IFM Tensor batch size must be 1" (batch
8/4/2 = the folded depth) -- the ethos-u55 preset is regor's (batch > 1 compiles there).
The built-in ASPP head (dilations 6/12/18, dilated kernel height <= 37) is legal on both cores:
nothing to rewrite, every op on the NPU. DeepLabV3-MobileNetV3 and ConvNeXt-Tiny were not reached
in the session (onnx2tf took ~15 min per ResNet-sized model on the loaded machine).

Measured 2026-12-03 (same versions; exports of benchmarks/export_torch.py at the sizes it names,
torch 2.14.1 / torchvision 0.29.1, in /work/exports; ``--only --onnx NAME=PATH``):

| model | core | rewrites | original | rewritten | estimate rewritten/original |
|---|---|---|---|---|---|
| deeplabv3_mobilenet | regor | 0 (ok) | 131/1, 70/70, 100.00% of 2458M, 2164.94 ms | same | 1.00x |
| deeplabv3_mobilenet | legacy | 0 (ok) | vela did not finish in 900 s | same | - |

DeepLabV3-MobileNetV3-Large, 1x3x256x256: every conv is legal on ethos-u55 (nothing rewritten)
and on the NPU (regor); the one CPU op is the final RESIZE_BILINEAR 16x16 -> 256x256 ("Scaling
matches and operation has unsupported scale-factor=16": Vela takes 2x/4x/8x), not a conv, 0
MACs. The legacy core ran past 900 s (that timeout lost the whole row then; now it is the
cell). Vela's own MAC count is 136.8G for the model's 2.46G: the ASPP convs (3x3, dilation
12/24/36 on the 16x16 map, pads = dilation) are legal on regor but costed far above their MACs;
dilation 24 and 36 only ever read padding off the centre tap, so the dead-taps lowering (exact:
1x1) would remove most of it, but it runs only to fix a broken rule and ethos-u55 has no dilation
rule: not measured yet which form Vela estimates faster.
ConvNeXt-Tiny, 1x3x224x224: 1 rewrite (the 4x4 stride-4 stem: stride <= 3); onnx2tf
(-tb tf_converter -oiqt) wrote the SavedModel of both the original and the rewrite, then exited 0
without any TFLite (853 s for both), so there is no placement yet. (Since then: GELU's Erf had
become FlexErf, which int8 calibration cannot run; the judge now passes -rtpo erf, and a model
without an int8 TFLite is that cell's "no int8 TFLite: <onnx2tf's reason>".)

Measured 2026-12-03 (same versions, ``--small --cores regor``, ethos-u55-128; exports at
export_torch.SMALL sizes; machine shared, but Vela's estimate does not depend on load):

| model (regor) | rewrites (all ok) | original | rewritten | estimate |
|---|---|---|---|---|
| dcgan | 0 | 13/0, 5/5, 100.00% of 105M, 13.43 ms | same model | 1.00x |
| unet_decoder | 3 | 14/3, 4/7, 80.04% of 71M, 1.44 ms | 17/0, 7/7, 100.00%, 2.50 ms | 1.74x |
| shufflenet_v2 | 16 | 202/0, 56/56, 100% of 27M, 7.61 ms | 98/0, 71/71, 100% of 50M, 5.95 ms | 0.78x |
| mobilevit_xxs | 9 | vela crashed (signal 11) | 520/32, 35/35, 100.00% of 87M, 32.15 ms | - |
| convnext_atto | 1 | 444/92, 40/40, 100% of 45M, 20.10 ms | 445/92, 40/40, 100%, 18.65 ms | 0.93x |

The legacy core on the same TFLites: dcgan 1.00x (all on the NPU); unet_decoder 13/4 -> 16/1
(4/7 -> 7/7 convs; the one CPU op left is onnx2tf's layout TRANSPOSE perm 0 2 3 1, in both),
1.51 -> 2.69 ms; shufflenet_v2 109/93 -> 98/0 (the 93: 5-D shuffle RESHAPE/TRANSPOSEs and
TRANSPOSEs the legacy core does not run), 6.32 -> 6.48 ms.
unet_decoder's 1.74x is not a slowdown: the original's estimate leaves out its three
TRANSPOSE_CONVs, which run on the CPU ((Padding::VALID) Unsupported IFM/OFM shapes, 8 -> 18 for
k3 s2 p1 op1: 20% of the MACs). Vela's per-layer figures (--verbose-performance) for the rewrite:
those three (now pads 1,1,0,0, output_padding 0: output = input*2, SAME) cost 532,523 of its
1,252,439 cycles; the other layers 719,916 cycles = 1.44 ms, the original's estimate exactly.
The sub-pixel lowering instead (4 phase convs + Reshape/Concat interleave, a target with
``transposed: false``) is all on the NPU too but 4.98 ms, so the padding fix is the cheaper form.
mobilevit_xxs: regor SIGSEGVs on the original TFLite (its 5-D/6-D unfold views; twice of twice);
the rewrite's 32 CPU ops are LayerNorm MEANs over depth ("Unsupported depth-reduction"), no conv.
convnext_atto (64x64; timm's 3.7M-parameter ConvNeXt), judged now that GELU's Erf converts: every
conv on the NPU before and after; the one rewrite is the 4x4 stride-4 stem (regor runs it
unpadded, slower: 0.93x after). Its 92 CPU ops on both sides, no conv: 24 DIV ("Unsupported
opType") and 12 DEQUANTIZE / 12 NEG / 12 QUANTIZE (a float NEG) from onnx2tf's pseudo-Erf of 12
GELUs, and 32 LayerNorm MEANs over depth ("Unsupported depth-reduction").
ConvNeXt-Tiny, r3d_18 and DeepLabV3 did not finish onnx2tf's seven TFLite conversions (float32,
float16, dynamic range, integer, full integer, two int16 variants; each ~7-10 min for a 30M-weight
model at load 6-12) in this session; ``--only convnext_atto`` is timm's 3.7M-parameter ConvNeXt.

Measured 2026-12-04 (same versions; onnx2tf now converts only the full-int8 TFLite: ConvNeXt-Tiny
original and rewrite both in ~8 min at load 12; ``--small --cores regor --only convnext_tiny
r3d_18 deeplabv3_mobilenet``, ethos-u55-128; like for like: Vela's per-layer cycles over the
parts the original ran wholly on the NPU, original -> rewritten, then the original's CPU ops and
what the rewrite spends on the NPU where they were, then the CPU ops left):

| model (regor) | rewrites (ok) | original | rewritten | estimate |
|---|---|---|---|---|
| convnext_tiny | 1 | 642/134, 22/22, 100% of 364M, 88.42 ms | 643/134, 22/22, 100%, 85.01 ms | 0.96x |
| r3d_18 | 20 | 23/60, 0/20, 0.01% of 1661M, 4.32 ms | 356/0, 54/54, 100.00%, 126.42 ms | 29.29x |
| deeplabv3_mobilenet | 0 | 131/1, 70/70, 100.00% of 616M, 551.39 ms | same model | 1.00x |

| model (regor) | like for like | original's CPU ops -> rewrite on the NPU | CPU ops left |
|---|---|---|---|
| convnext_tiny | 88.40 -> 84.99 ms (0.96x) | 134 (0 MACs) -> 0 ms (still on the CPU) | 134 (0 MACs) |
| r3d_18 | 1.45 -> 1.45 ms (1.00x) | 60 (1661.1M MACs) -> 124.97 ms | 0 |
| deeplabv3_mobilenet | same model | - | 1 (0 MACs) |

ConvNeXt-Tiny (64x64): every conv on the NPU before and after; the 4x4 stride-4 stem rewrite
makes it 0.96x by both measures. Its 134 CPU ops, none a conv and 0 MACs: 36 DIV and 18
DEQUANTIZE / 18 NEG / 18 QUANTIZE (onnx2tf's pseudo-Erf of the GELUs: "Unsupported opType", a
float NEG) and 44 LayerNorm MEANs over depth ("Unsupported depth-reduction"). r3d_18 (8x32x32):
the original's 20 CONV_3D run on the CPU in float between DEQUANTIZE/QUANTIZE (60 CPU ops, all
but 0.01% of the MACs), so its "4.32 ms" leaves out the convs; like for like the parts it ran on
the NPU cost the rewrite the same 1.45 ms, and the convs (54 CONV_2D after the rank lowering)
cost 124.97 ms on the NPU. DeepLabV3-MobileNetV3 (128x128): nothing to rewrite, every conv on
the NPU; the one CPU op is the final 16x RESIZE_BILINEAR ("unsupported scale-factor=16"), 0 MACs.
So the goal holds for all three: 100% of convs and of MACs on the NPU after the rewrite, and no
model slower by Vela's estimate where it compares the same work.
DeepLabV3's 551 ms is 98% its three ASPP convs (3x3, dilation 12/24/36, pads = dilation, on the
8x8 map): regor costs them 21.1M, 78.0M and 170.9M of the 275.7M cycles, counting 2.66G, 9.83G
and 21.5G MACs for convs of 141.6M MACs each. On an 8x8 map every off-centre tap of those reads
only padding, so each is exactly its centre 1x1 conv. With ``max_dilation: 2`` added to a copy
of the ethos-u55 preset the rewrite lowers the three (status ok, verified on onnxruntime), the
MACs go 616M -> 238M and Vela's estimate 551.39 -> 12.99 ms (0.02x), every conv on the NPU. The
preset does not have that rule (regor runs dilation 4 on the probe natively, and whether our
dilation lowerings beat that outside the dead-tap case is not measured): left for a rule that
trips where Vela's dense dilated kernel costs more than the lowering, confirmed by a probe.
The legacy core (``--cores legacy --vela-timeout 600``, the same TFLites reused):

| model (legacy) | original | rewritten | estimate | like for like |
|---|---|---|---|---|
| convnext_tiny | 618/158, 21/22, 99.68%, 80.05 ms | 620/157, 22/22, 100.00%, 80.22 ms | 1.00x | 1.00x |
| r3d_18 | 0/83, 0/20, 0.00%, 0 ms | 205/151, 13/54, 6.01%, 60.67 ms | - | - |
| deeplabv3_mobilenet | vela did not finish in 600 s | same model | - | same model |

ConvNeXt-Tiny on the legacy core: the stride-4 stem is on the CPU in the original ("Strides must
fulfil...", 1.2M MACs); rewritten it is on the NPU (0.17 ms), the rest 80.01 -> 80.01 ms like
for like; 157 non-conv CPU ops stay (LayerNorm MEANs over the channel axis, broadcasting MULs,
the pseudo-Erf's DIVs). r3d_18 on the legacy core: the original is all 5-D (every op on the CPU,
so no like-for-like part); the rewrite's 151 CPU ops are 4-D TRANSPOSEs it does not take, the
5-D input's layout ops and batch-8 tensors ("IFM Tensor batch size must be 1"): the ethos-u55
preset is regor's (ethos-u55-vela3 is the legacy core's).

Measured 2026-12-04 (same versions, ``--small --cores regor``, ethos-u55-128), the whole set on
one code (dead taps first on every conv, the channels-last ConvTranspose interleave, like for
like paired by what each op reads and feeds):

| model (regor) | rewrites (ok) | original | rewritten | estimate |
|---|---|---|---|---|
| shufflenet_v2 | 16 | 202/0, 56/56, 100% of 27M, 7.61 ms | 98/0, 71/71, 100%, 5.95 ms | 0.78x |
| r3d_18 | 24 | 23/60, 0/20, 0.01% of 1661M, 4.32 ms | 299/0, 47/47, 100%, 97.89 ms | 22.68x |
| mobilevit_xxs | 9 | vela crashed (signal 11) | 520/32, 35/35, 100% of 87M, 32.15 ms | - |
| unet_decoder | 3 | 14/3, 4/7, 80.04% of 71M, 1.44 ms | 17/0, 7/7, 100%, 2.50 ms | 1.74x |
| dcgan | 0 | 13/0, 5/5, 100% of 105M, 13.43 ms | same model | 1.00x |
| convnext_tiny | 4 | 642/134, 22/22, 100% of 364M, 88.42 ms | 643/134, 22/22, 100%, 84.81 ms | 0.96x |
| deeplabv3_mobilenet | 3 | 131/1, 70/70, 100% of 616M, 551 ms | 131/1, 70/70, 238M, 12.99 ms | 0.02x |

Like for like: shufflenet_v2 0.78x, r3d_18 1.45 -> 1.46 ms (1.01x), unet_decoder 1.00x,
convnext_tiny 0.96x, deeplabv3_mobilenet 0.02x (mobilevit_xxs: no original to compare).

DeepLabV3's three rewrites are now dead taps first (each ASPP conv its exact centre 1x1 conv, on
a legal conv: no rule needed): 551.39 -> 12.99 ms. r3d_18: 24 rewrites (was 20: the last
stage's 3-D convs over a depth-1 map lose their padding-only depth taps first), 47 convs (was
54), 97.89 ms (was 126.42); its like for like read 6.90x before the pairing fix (the last
stage's convs tied to no original op), 1.01x now: the 3 layout ops the rewrite adds before the
MEAN (TRANSPOSE, RESHAPE, TRANSPOSE back to 5-D, 4,864 cycles). The channels-last interleave
against the batch folds it replaces (the s3/s4/s8 probes rewritten for ethos-u55, regor): 0.17
vs 1.10 ms, 0.30 vs 1.93 ms, 0.30 vs 1.69 ms, 15 vs 36, 23 vs 59, 75 vs 219 ops.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import onnx

import convrewrite as cr
from convrewrite.errors import ConvRewriteError
from convrewrite.models import BUILDERS
from convrewrite.vendors.env import TORCH, vendor_dir
from convrewrite.vendors.vela import CORES, DEFAULT_TIMEOUT_S, vendor_check

HERE = Path(__file__).resolve().parent
MODELS = ["shufflenet_v2", "r3d_18", "mobilevit_xxs", "unet_decoder", "dcgan", "convnext_tiny",
          "deeplabv3_mobilenet"]
BUILTIN = "builtin:"      # --only builtin:deeplab_head judges convrewrite.models.deeplab_head()


def export(names: list[str], folder: Path, small: bool = False) -> None:
    python = TORCH.require()
    subprocess.run([str(python), str(HERE / "export_torch.py"), str(folder),
                    *(["--small"] if small else []), *names], check=True)


def summarise(result: dict) -> dict:
    """One cell's numbers, or why there are none (onnx2tf wrote no int8 TFLite, Vela rejected the
    model or crashed on it)."""
    if result.get("no_tflite"):
        return {"failed": result["no_tflite"]}
    if result.get("crashed"):
        return {"failed": result["crashed"]}
    if result["rejected"]:
        return {"failed": f"REJECTED: {result['rejected']}"}
    npu, cpu = result["npu"], result["cpu"]
    total = npu["macs"] + cpu["macs"]
    convs = npu["convs"] + cpu["convs"]
    return {"npu_ops": npu["ops"], "cpu_ops": cpu["ops"], "convs_npu": npu["convs"],
            "convs": convs, "macs_npu_share": npu["macs"] / total if total else 1.0,
            "macs": total, "time_s": result["inference_time_s"]}


def cell(s: dict) -> str:
    if "failed" in s:
        return s["failed"]
    time_ = "-" if s["time_s"] is None else f"{s['time_s'] * 1e3:.2f} ms"
    return (f"{s['npu_ops']}/{s['cpu_ops']}, {s['convs_npu']}/{s['convs']}, "
            f"{100 * s['macs_npu_share']:.2f}% of {s['macs'] / 1e6:.0f}M, {time_}")


def ratio(before: dict, after: dict) -> str:
    if "failed" in before or "failed" in after or not before["time_s"] or not after["time_s"]:
        return "-"
    return f"{after['time_s'] / before['time_s']:.2f}x"


def like_cell(like: dict | None) -> str:
    """Vela's estimate over the work the original ran wholly on the NPU (rewritten vs original),
    then what the original ran on the CPU (ops, MACs) and what the rewrite spends on it on the
    NPU, then the CPU ops left in the rewrite."""
    if not like:
        return "-"
    ratio = "-" if like["ratio"] is None else f"{like['ratio']:.2f}x"
    return (f"{like['original_s'] * 1e3:.2f} -> {like['rewritten_s'] * 1e3:.2f} ms ({ratio}); "
            f"original CPU {like['cpu_ops']} ops ({like['cpu_macs'] / 1e6:.1f}M MACs) -> "
            f"{like['cpu_part_rewritten_s'] * 1e3:.2f} ms on the NPU; CPU left {like['cpu_ops_left']} "
            f"({like['cpu_macs_left'] / 1e6:.1f}M MACs)")


def cpu_reasons(result: dict) -> list[str]:
    """Every CPU op of one compile as 'N x TYPE: reason', most frequent first."""
    counts = Counter(f"{op['type']}: {op['reason']}" for op in result.get("cpu_ops", []))
    return [f"{n} x {what}" for what, n in counts.most_common()]


def load(name: str, files: dict[str, Path], exports: Path) -> onnx.ModelProto:
    if name.startswith(BUILTIN):
        return BUILDERS[name[len(BUILTIN):]]()
    return onnx.load(files.get(name, exports / f"{name}.onnx"))


def judge_model(name: str, original: onnx.ModelProto, target, out: Path,
                vela_timeout: float = DEFAULT_TIMEOUT_S,
                cores: tuple[str, ...] | None = None) -> dict:
    """One model's row: per core, the original's and the rewrite's placement, or what failed.
    A failure (the rewrite, onnx2tf, Vela crashing) stays in this row; the run goes on."""
    started = time.monotonic()
    row = {"model": name, "status": "-", "rewrites": 0, "cores": {}, "error": None}
    try:
        rewritten, report = cr.rewrite(original, target)
        row["status"], row["rewrites"] = report.status, len(report.records)
        section = vendor_check(original, rewritten, target, out_dir=out,
                               vela_timeout=vela_timeout, cores=cores)
    except ConvRewriteError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["seconds"] = time.monotonic() - started
        return row
    models = section["models"]
    for core, before in models["original"].items():
        after = models.get("rewritten", models["original"])[core]
        row["cores"][core] = {"before": summarise(before), "after": summarise(after),
                              "cpu_before": cpu_reasons(before), "cpu_after": cpu_reasons(after),
                              "like": (section.get("like_for_like") or {}).get(core),
                              "same": "rewritten" not in models}
    row["seconds"] = time.monotonic() - started
    return row


def print_table(rows: list[dict], target) -> None:
    print(f"\n{target.name} ({target.vendor.accelerator_config}); cells: NPU/CPU ops, convs on "
          "NPU/all, MACs on the NPU, Vela's estimate (NPU work only); like for like: the "
          "estimate over the work the original ran wholly on the NPU, original -> rewritten, "
          "then the original's CPU ops and what the rewrite spends on them\n")
    print("| model | core | rewrites | original | rewritten | estimate rewritten/original | "
          "like for like |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["error"]:
            print(f"| {r['model']} | - | {r['rewrites']} ({r['status']}) | {r['error']} | - | - "
                  "| - |")
        for core, c in r["cores"].items():
            print(f"| {r['model']} | {core} | {r['rewrites']} ({r['status']}) | "
                  f"{cell(c['before'])} | {cell(c['after'])} | {ratio(c['before'], c['after'])} "
                  f"| {'same model' if c.get('same') else like_cell(c.get('like'))} |")
    for r in rows:
        for core, c in r["cores"].items():
            for when in ("before", "after"):
                for reason in c[f"cpu_{when}"]:
                    print(f"  {r['model']} {core} {'original' if when == 'before' else 'rewritten'}"
                          f" on the CPU: {reason}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="ethos-u55")
    p.add_argument("--only", nargs="*", default=MODELS,
                   help=f"model names; {BUILTIN}NAME for a convrewrite.models builder")
    p.add_argument("--onnx", nargs="*", default=[], metavar="NAME=PATH",
                   help="judge this ONNX file as NAME instead of exporting it")
    p.add_argument("--out", type=Path, default=vendor_dir() / "placement")
    p.add_argument("--vela-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="per Vela compile; past it the cell says 'vela did not finish in S s'")
    p.add_argument("--cores", nargs="*", choices=CORES, default=None,
                   help="which Vela cores to compile with (default: the target's, then the other)")
    p.add_argument("--small", action="store_true",
                   help="export at export_torch.py's SMALL input sizes (minutes per model)")
    args = p.parse_args()
    files = {k: Path(v) for k, v in (x.split("=", 1) for x in args.onnx)}
    names = list(dict.fromkeys(args.only + list(files)))
    exports = args.out / ("onnx-small" if args.small else "onnx")
    to_export = [n for n in names if n not in files and not n.startswith(BUILTIN)]
    if to_export:
        export(to_export, exports, args.small)
    target = cr.load_target(args.target)
    rows = []
    for name in names:
        out = args.out / target.name / (name.replace(BUILTIN, "builtin_")
                                         + ("-small" if args.small else ""))
        rows.append(judge_model(name, load(name, files, exports), target, out,
                                args.vela_timeout, tuple(args.cores) if args.cores else None))
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
