"""Where the rewrite's own time goes (issue 16, section 1): ``convrewrite.rewrite(verify=False)``
under cProfile, and its wall time beside onnxslim's on the same model in the same run.

    python -m benchmarks.rewrite_profile                       # ResNet-50 on a 256-channel target
    python -m benchmarks.rewrite_profile --model /work/exports/googlenet.ts.onnx --target generic
    python -m benchmarks.rewrite_profile --profile 25          # the 25 largest cumulative entries

The profile counts process (CPU) time, so its figures hold on a loaded machine; the wall-clock
ratio only on an idle one (rounds alternate; the smallest of ``--rounds`` runs each is printed,
with the ratio of CPU times beside it, which load disturbs less).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import onnx

import convrewrite
from convrewrite.models import resnet50

C256 = {"name": "c256", "conv": {"max_in_channels": 256, "max_out_channels": 256}}


def _target(spec: str):
    return convrewrite.load_target(C256 if spec == "c256" else spec)


def _model(spec: str) -> onnx.ModelProto:
    return resnet50() if spec == "resnet50" else onnx.load(spec)


def _slim(model: onnx.ModelProto) -> None:
    import onnxslim
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnxslim.slim(copy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50", help="resnet50 or an .onnx path")
    ap.add_argument("--target", default="c256", help="c256 (ResNet-50's case), a preset or a YAML path")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="print the N largest cumulative-time entries of one profiled rewrite")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    model, target = _model(args.model), _target(args.target)
    if args.profile:
        prof = cProfile.Profile(time.process_time)
        prof.enable()
        convrewrite.rewrite(model, target, verify=False)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.profile)
        print(out.getvalue())
        return
    ours, slim = [], []
    for r in range(args.rounds):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            wall, cpu = time.perf_counter(), time.process_time()
            if which == 0:
                convrewrite.rewrite(model, target, verify=False)
            else:
                _slim(model)
            (ours if which == 0 else slim).append((time.perf_counter() - wall,
                                                   time.process_time() - cpu))
    (w_ours, c_ours), (w_slim, c_slim) = min(ours), min(slim)
    print(f"rewrite (verify=False) {w_ours:.3f} s, onnxslim {w_slim:.3f} s: "
          f"{w_ours / w_slim:.2f}x wall (goal <= 2x); CPU time {c_ours:.3f} s vs {c_slim:.3f} s: "
          f"{c_ours / c_slim:.2f}x")

if __name__ == "__main__":
    main()
