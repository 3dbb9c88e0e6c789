"""What the channel split costs on an NPU, by the NPU's own cost model (issue 16, section 2):
Vela's estimated inference time of a channel-split ResNet-50 over the original's, on Ethos-U55
with a forced 256-channel conv limit (benchmarks/targets/ethos-u55-limit256.yaml). Goal <= 1.03x.

    python benchmarks/vela_split_cost.py [--image-size 224] [--forms chain tree] [--out DIR]

Vela's estimate is deterministic (compiles are byte-identical), so machine load does not change
it: this may run beside other jobs. Each form (accumulation order, input split, chunk fusion) is
rewritten with the limit-256 target and judged with the original in one onnx2tf process, then
compiled by Vela (regor, ethos-u55-128). Besides the ratio, the per-layer CSV Vela writes gives
where the extra cycles go, grouped by Vela's operator (conv, the Add of partial sums, Concat,
Split / Slice, ...), so a ratio above the goal is explained. Converted TFLites are reused when the
model is the same (its digest is kept beside them): onnx2tf takes ~15 min per form on a loaded
2-core machine.

Measured 2026-12-02 at 7b7b70d (Vela 5.2.0 regor, ethos-u55-128, onnx2tf 2.6.9 tf_converter,
built-in ResNet-50 224x224, ``--forms chain``; 31 convs split into 224):

| form | NPU ops | CPU ops | cycles | inference | vs original |
|---|---|---|---|---|---|
| original | 77 | 0 | 52677847 | 105.36 ms | 1.000x |
| chain | 415 | 0 | 58282818 | 116.57 ms | 1.106x |

Above the 1.03x goal. Where the +5.6M cycles go (per-layer CSV, share of the original's cycles):
the Adds of partial sums, 32 -> 236 ADD ops, +7.93% (Vela runs each as a separate elementwise pass
reading two int8 maps; nothing fuses it into the conv; 16 -> 163 ADD in the TFLite); 34 new
TRANSPOSE ops +0.90% and 16 CONCAT +0.52% (onnx2tf's: 17 TRANSPOSEs of [1, 7, 7, 256] chunks to
NCHW before 2 CONCATENATIONs at the last stage, none in the original); the sub-convs
themselves +1.28% over the whole convs (86 -> 242 Vela conv ops). So on the
NPU the in-channel split's partial-sum Adds are the cost, not the convs. The tree form (same
number of Adds) was not measured: its conversion did not finish in the session.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import onnx

import convrewrite as cr
from convrewrite.models import resnet50
from convrewrite.vendors import tflite as tflite_conversion
from convrewrite.vendors.survey import digest
from convrewrite.vendors.env import VendorFailed, vendor_dir
from convrewrite.vendors.vela import calibration_samples, compile_tflite, read_ops

HERE = Path(__file__).resolve().parent
TARGET = HERE / "targets" / "ethos-u55-limit256.yaml"
# name -> the target's rewrite: section (see convrewrite/target.py RewriteRules)
FORMS = {
    "chain": {"accumulate": "chain"},
    "tree": {"accumulate": "tree"},
    "chain-slice": {"accumulate": "chain", "input_split": "slice"},
    "chain-unfused": {"accumulate": "chain", "fuse_chunks": False},
}


def per_layer(folder: Path) -> dict[str, tuple[int, int]]:
    """Vela's per-layer CSV summed by its original TFLite operator: (ops, cycles)."""
    table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in folder.glob("*_per-layer.csv"):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                key = f"{row['Original Operator']}/{row['Target']}"
                table[key][0] += 1
                table[key][1] += int(float(row["Op Cycles"] or 0))
    return {k: (n, c) for k, (n, c) in table.items()}


def convert_or_reuse(jobs: dict[str, tflite_conversion.Job]) -> list:
    """Each job's int8 TFLite; one converted earlier from the same model (its digest is kept
    beside it) is reused, since onnx2tf takes minutes per ResNet-50 form."""
    stale = [job for job in jobs.values() if not _fresh(job)]
    made = dict(zip(map(id, stale), tflite_conversion.convert_many(stale))) if stale else {}
    for job in stale:
        if not isinstance(made[id(job)], VendorFailed):
            (job.work / "model.sha256").write_text(digest(job.model))
    return [made.get(id(job), job.tflite) for job in jobs.values()]


def _fresh(job: tflite_conversion.Job) -> bool:
    kept = job.work / "model.sha256"
    return job.tflite.is_file() and kept.is_file() and kept.read_text() == digest(job.model)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--model", help="an ONNX file instead of the built-in ResNet-50")
    p.add_argument("--forms", nargs="*", default=["chain", "tree"], choices=sorted(FORMS))
    p.add_argument("--target", default=str(TARGET), help="the forced-limit target YAML")
    p.add_argument("--out", type=Path, default=vendor_dir() / "split_cost")
    args = p.parse_args()
    original = onnx.load(args.model) if args.model else resnet50(image_size=args.image_size)
    models = {"original": original}
    for form in args.forms:
        target = cr.load_target({"extends": args.target, "rewrite": FORMS[form]})
        rewritten, report = cr.rewrite(original, target, verify=False)
        convs = sum(n.op_type == "Conv" for n in rewritten.graph.node)
        print(f"{form}: {len(report.records)} rewrites, {convs} convs ({report.status})",
              flush=True)
        models[form] = rewritten
    jobs = {name: tflite_conversion.Job(m, calibration_samples(m, None, 0, None),
                                        args.out / name / "onnx2tf")
            for name, m in models.items()}
    made = convert_or_reuse(jobs)
    config = cr.load_target(args.target).vendor.accelerator_config
    results, layers = {}, {}
    for name, tflite in zip(jobs, made):
        if isinstance(tflite, VendorFailed):
            print(f"{name}: {tflite}")
            continue
        folder = args.out / name / "vela_regor"
        r = compile_tflite(tflite, config, "regor", folder, ("--verbose-performance",),
                           read_ops(tflite))
        if r.failure:
            print(f"{name}: {r.failure}")
            continue
        results[name], layers[name] = r, per_layer(folder)
        print(f"{name}: {r.summary()}; {r.cycles} cycles", flush=True)
    base = results.get("original")
    if base is None or not base.cycles:
        print("no estimate for the original model")
        return 1
    print(f"\nVela 5.2 regor {config}, ResNet-50 {args.image_size}x{args.image_size}, "
          f"limit 256 ({args.target}); goal <= 1.03x\n")
    print("| form | NPU ops | CPU ops | cycles | inference | vs original |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        c = r.counts()
        print(f"| {name} | {c['npu']['ops']} | {c['cpu']['ops']} | {r.cycles} | "
              f"{r.inference_time_s * 1e3:.2f} ms | {r.cycles / base.cycles:.3f}x |")
    print("\nWhere the cycles go (Vela's per-layer CSV by TFLite operator: ops, cycles, "
          "change from the original):")
    kinds = sorted({k for t in layers.values() for k in t})
    for name, table in layers.items():
        if name == "original":
            continue
        print(f"  {name}:")
        for k in kinds:
            n, c = table.get(k, (0, 0))
            n0, c0 = layers["original"].get(k, (0, 0))
            if (n, c) != (n0, c0):
                print(f"    {k:28s} {n0:4d} -> {n:4d} ops, {c0:>10d} -> {c:>10d} cycles "
                      f"({(c - c0) / base.cycles:+.2%} of the original)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
