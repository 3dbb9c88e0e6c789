"""What the channel split costs at run time, and how long the rewrite itself takes.

On the ResNet-50 topology (batch 1, 224x224) with channel limits 512, 256 and 128 and each preset,
prints the onnxruntime CPU latency of the rewritten model over the original's, for the chain and the
tree accumulation and for both input forms (one Split vs a Slice per chunk), next to a control
(the original against a copy of itself). Also the rewrite's own time (no verification) and that
time as a ratio to onnxslim simplifying the same model in the same run.

Run: python benchmarks/split_overhead.py [--rounds 40]      (not a test; takes a few minutes)
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import onnx

import convrewrite
from convrewrite.models import resnet50
from convrewrite.target import load_target, preset_names
from timing import copy_of, session, time_side_by_side


def rewrite_seconds(model: onnx.ModelProto, target) -> tuple[onnx.ModelProto, float]:
    """The user's path without verification: split, then chunk and sum fusion."""
    start = time.perf_counter()
    out, _ = convrewrite.rewrite(model, target, verify=False)
    return out, time.perf_counter() - start


def onnxslim_seconds(model: onnx.ModelProto) -> float | None:
    try:
        import onnxslim
    except ImportError:
        return None
    start = time.perf_counter()
    onnxslim.slim(copy_of(model))
    return time.perf_counter() - start


def reorders(model: onnx.ModelProto, tmp: str) -> int:
    """Layout reorders onnxruntime inserts (the real cost of Split/Concat, see FACTS.md)."""
    session(model, optimized_path=tmp)
    ops = Counter(n.op_type for n in onnx.load(tmp).graph.node)
    return ops["ReorderInput"] + ops["ReorderOutput"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    model = resnet50()
    feeds = {model.graph.input[0].name:
             np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)}
    slim = onnxslim_seconds(model)
    base_ms, ctrl_ms = time_side_by_side([model, copy_of(model)], feeds, args.rounds)
    print(f"ResNet-50 original: {base_ms * 1e3:.1f} ms; control (copy of itself): "
          f"{ctrl_ms / base_ms:.3f}x; reorders in the original: "
          f"{reorders(model, '/tmp/cr_bench_opt.onnx')}")
    print(f"onnxslim.slim on the same model: {slim:.2f} s" if slim else "onnxslim not installed")
    configs = []
    for limit in (512, 256, 128):
        for accumulate, input_split, fuse in (("chain", "split", True), ("tree", "split", True),
                                              ("chain", "slice", True), ("chain", "split", False),
                                              ("tree", "split", False)):
            label = f"limit {limit} {accumulate} {input_split}{'' if fuse else ' unfused'}"
            configs.append((label, load_target({
                "name": f"limit{limit}", "conv": {"max_in_channels": limit,
                                                  "max_out_channels": limit, "channel_align": 8},
                "rewrite": {"accumulate": accumulate, "input_split": input_split,
                            "fuse_chunks": fuse}})))
    configs += [(f"preset {name}", load_target(name)) for name in preset_names()]
    header = (f"{'config':32s} {'convs':>5s} {'latency':>8s} {'control':>8s} {'reorders':>8s} "
              f"{'rewrite s':>9s} {'vs slim':>8s}")
    print(header)
    print("-" * len(header))
    for label, target in configs:
        out, seconds = rewrite_seconds(model, target)
        convs = sum(n.op_type == "Conv" for n in out.graph.node)
        ref, ctrl, new = time_side_by_side([model, copy_of(model), out], feeds, args.rounds)
        vs_slim = f"{seconds / slim:.2f}x" if slim else "-"
        print(f"{label:32s} {convs:5d} {new / ref:7.3f}x {ctrl / ref:7.3f}x "
              f"{reorders(out, '/tmp/cr_bench_opt.onnx'):8d} {seconds:9.2f} {vs_slim:>8s}",
              flush=True)


if __name__ == "__main__":
    main()
