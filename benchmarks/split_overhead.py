"""What the channel split costs at run time, and how long the rewrite itself takes.

On the ResNet-50 topology (batch 1, 224x224) with channel limits 512, 256 and 128 (and each preset,
with --presets), prints the onnxruntime CPU latency of the rewritten model over the original's, for
the emitted forms asked for (chain or tree accumulation, one Split or a Slice per chunk, chunk fusion
on or off) side by side. Each row is timed again until its control (the original against a copy of
itself, in the same timing) is within --tolerance of 1.00, up to --tries times; the row prints the
median and the spread of the accepted ratios, and how many timings it took. A row whose control
never came within the tolerance says so: its ratio means nothing. Also the rewrite's own time (no
verification) and that time as a ratio to onnxslim simplifying the same model in the same run.

--profile prints instead, per limit, where the rewritten model's extra time goes: onnxruntime's
per-node profiler on both models (graph optimisations on), per ResNet stage (the conv outputs' map
size) and in total, split into sub-convs vs the original's convs, glue (Split/Concat/Add/Sum/Slice
and the NCHWc layout reorders), other ops and time between nodes (dispatch); the optimised graphs
are saved (--save-optimized) to see the reorders, and a fit of conv kernel time against MACs
gives a conv's fixed cost (what plan/cost.py's NODE_COST_IN_MACS stands for). Profiles are
fractions within one run.

--threads N and --spinning time (or profile) with N intra-op threads and with onnxruntime's default
thread spinning on (what a user's single session gets; the models are then timed in blocks, not
run by run, so that one session's spinning threads do not steal the next one's cores): many small
sub-convs pay the thread pool's per-op wake-up, which spinning off makes dearer.

Run (not a test): python benchmarks/split_overhead.py [--limits 256,128] [--forms chain-split]
                  python benchmarks/split_overhead.py --profile [--limits 256,128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs

import convrewrite
from convrewrite.models import resnet50
from convrewrite.build.onnx_read import spec_of
from convrewrite.decline import Decline
from convrewrite.lowerings.channel_split import use_split
from convrewrite.plan.channels import conv_alone_cost, plan_channel_split, split_cost
from convrewrite.plan.cost import NODE_COST_IN_MACS
from convrewrite.target import load_target, preset_names
from node_profile import conv_cost_fit, overhead_table, profile_models
from timing import copy_of, session, time_side_by_side

# name -> (accumulate, input_split, fuse_chunks); the first is the default a target gets
FORMS = {
    "chain-split": ("chain", "split", True),
    "tree-split": ("tree", "split", True),
    "chain-slice": ("chain", "slice", True),
    "chain-split-unfused": ("chain", "split", False),
    "tree-split-unfused": ("tree", "split", False),
}


def limit_target(limit: int, form: str):
    accumulate, input_split, fuse = FORMS[form]
    return load_target({
        "name": f"limit{limit}", "conv": {"max_in_channels": limit, "max_out_channels": limit,
                                          "channel_align": 8},
        "rewrite": {"accumulate": accumulate, "input_split": input_split, "fuse_chunks": fuse}})


def predicted_ratio(model: onnx.ModelProto, target) -> float:
    """The convs' cost after the channel split over before, by the cost model (plan/cost.py, the
    figure each record shows), over every conv of the model: set beside the measured latency, it
    says how well the model is calibrated (it still counts the Split/Concat chunk fusion removes;
    ops other than convs are left out)."""
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    after = before = 0.0
    for node in graph.nodes:
        spec = spec_of(node) if node.op == "Conv" else None
        if spec is None or isinstance(spec, Decline):
            continue
        plan = plan_channel_split(spec, target)
        if isinstance(plan, Decline):            # within the limits: the conv alone
            after, before = after + conv_alone_cost(spec), before + conv_alone_cost(spec)
            continue
        cost, alone, _ = split_cost(spec, plan, use_split(target))
        after, before = after + cost, before + alone
    return after / before


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


def optimized_ops(model: onnx.ModelProto, path: str) -> Counter:
    """Op counts of the graph onnxruntime runs (graph optimisations on), saved at ``path``."""
    session(model, optimized_path=path)
    return Counter(n.op_type for n in onnx.load(path).graph.node)


def reorders(ops: Counter) -> int:
    """Layout reorders onnxruntime inserts (the real cost of Split/Concat, see FACTS.md)."""
    return ops["ReorderInput"] + ops["ReorderOutput"]


def controlled_ratio(model, out, feeds, args) -> tuple[list[float], list[float], int]:
    """Time [original, copy, rewritten] until ``args.accept`` timings have their control within
    ``args.tolerance`` of 1 (at most ``args.tries``): the accepted ratios, every control, timings
    made."""
    accepted, controls = [], []
    for n in range(1, args.tries + 1):
        ref, ctrl, new = time_side_by_side([model, copy_of(model), out], feeds, args.rounds,
                                           threads=args.threads, spinning=args.spinning)
        controls.append(ctrl / ref)
        if abs(ctrl / ref - 1) <= args.tolerance:
            accepted.append(new / ref)
            if len(accepted) >= args.accept:
                return accepted, controls, n
    return accepted, controls, args.tries


def ratio_text(accepted: list[float], controls: list[float]) -> tuple[str, str]:
    """The row's latency columns (median, spread of the accepted ratios, the control furthest
    from 1, timings made/accepted) and a warning where no control was within tolerance."""
    worst = max(controls, key=lambda c: abs(c - 1))
    tries = f"{len(controls)}/{len(accepted)}"
    if not accepted:
        return (f"{'-':>8s} {'-':>13s} {worst:8.3f}x {tries:>5s}",
                "  NO CONTROL WITHIN TOLERANCE: the machine is busy, this row means nothing")
    spread = f"{min(accepted):.3f}-{max(accepted):.3f}"
    return (f"{statistics.median(accepted):7.3f}x {spread:>13s} {worst:8.3f}x {tries:>5s}", "")


def time_rows(model, feeds, configs, args, slim) -> None:
    header = (f"{'config':32s} {'convs':>5s} {'latency':>8s} {'spread':>13s} {'worst ctl':>9s} "
              f"{'tries':>5s} {'model x':>7s} {'reorders':>8s} {'rewrite s':>9s} {'vs slim':>8s}")
    print(header)
    print("-" * len(header))
    for label, target in configs:
        out, seconds = rewrite_seconds(model, target)
        convs = sum(n.op_type == "Conv" for n in out.graph.node)
        accepted, controls, _ = controlled_ratio(model, out, feeds, args)
        vs_slim = f"{seconds / slim:.2f}x" if slim else "-"
        ops = optimized_ops(out, os.path.join(args.save_optimized, "bench_opt.onnx"))
        columns, warning = ratio_text(accepted, controls)
        print(f"{label:32s} {convs:5d} {columns} {predicted_ratio(model, target):6.3f}x "
              f"{reorders(ops):8d} {seconds:9.2f} {vs_slim:>8s}{warning}", flush=True)


def profile_rows(model, feeds, configs, args) -> None:
    original_path = os.path.join(args.save_optimized, "original_opt.onnx")
    for label, target in configs:
        out, _ = rewrite_seconds(model, target)
        stem = label.replace(" ", "_")
        rewritten_path = os.path.join(args.save_optimized, f"{stem}_opt.onnx")
        a, b = profile_models([model, out], feeds, runs=args.profile_runs, threads=args.threads,
                              optimized_paths=[original_path, rewritten_path],
                              spinning=args.spinning)
        total_a, total_b = (sum(n.micros for n in x) for x in (a, b))
        ops = Counter(n.op_type for n in onnx.load(rewritten_path).graph.node)
        print(f"\n{label}: profiled run {total_b / total_a:.3f}x the original's (one profile, "
              f"not a latency; the cost model says {predicted_ratio(model, target):.3f}x for the "
              f"convs); optimised graph {rewritten_path}: {ops['Conv']} Conv, "
              f"{reorders(ops)} reorders, {ops['Concat']} Concat, {ops['Split']} Split, "
              f"{ops['Slice']} Slice, {ops['Add'] + ops['Sum']} unfused Add/Sum")
        print("  fractions of the rewritten model's extra time (conv x: sub-convs' time over "
              "the original convs' in that stage)")
        for line in overhead_table(a, b):
            print("  " + line)
        print(f"  {conv_cost_fit(a, b)}; plan/cost.py has NODE_COST_IN_MACS = "
              f"{NODE_COST_IN_MACS / 1e6:.2f} M")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved runs per timing")
    parser.add_argument("--tries", type=int, default=6, help="timings at most per row")
    parser.add_argument("--accept", type=int, default=3,
                        help="timings with the control within tolerance that a row needs")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--limits", default="512,256,128")
    parser.add_argument("--forms", default=",".join(FORMS),
                        help=f"comma-separated, of {', '.join(FORMS)}")
    parser.add_argument("--presets", action="store_true", help="also a row per preset")
    parser.add_argument("--profile", action="store_true",
                        help="per-node profile per stage instead of latency ratios")
    parser.add_argument("--profile-runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--spinning", action="store_true",
                        help="onnxruntime's default thread spinning (what a user's one session "
                             "gets), models timed in blocks instead of run by run")
    parser.add_argument("--save-optimized", default="/tmp",
                        help="folder for onnxruntime's optimised graphs")
    args = parser.parse_args()
    model = resnet50()
    feeds = {model.graph.input[0].name:
             np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)}
    forms = [f for f in args.forms.split(",") if f]
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        parser.error(f"unknown forms {unknown}; known: {', '.join(FORMS)}")
    configs = [(f"limit {limit} {form}", limit_target(limit, form))
               for limit in map(int, args.limits.split(",")) for form in forms]
    if args.presets:
        configs += [(f"preset {name}", load_target(name)) for name in preset_names()]
    if args.profile:
        profile_rows(model, feeds, configs, args)
        return
    slim = onnxslim_seconds(model)
    accepted, controls, _ = controlled_ratio(model, copy_of(model), feeds, args)
    base_ms = time_side_by_side([model], feeds, args.rounds, threads=args.threads,
                                spinning=args.spinning)[0] * 1e3
    original_ops = optimized_ops(model, os.path.join(args.save_optimized, "original_opt.onnx"))
    columns, warning = ratio_text(accepted, controls)
    print(f"ResNet-50 original: {base_ms:.1f} ms; reorders in the original: "
          f"{reorders(original_ops)}; a copy of itself in place of the rewritten model "
          f"(latency, spread, worst control, timings made/accepted): {columns}{warning}")
    print(f"onnxslim.slim on the same model: {slim:.2f} s" if slim else "onnxslim not installed")
    time_rows(model, feeds, configs, args, slim)


if __name__ == "__main__":
    main()
