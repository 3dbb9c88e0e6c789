"""Where a model's onnxruntime time goes, per node kind and per stage, from the per-node profiler.

onnxruntime's profiler (SessionOptions.enable_profiling) writes one event per node run with its
kernel time and output shape. With graph optimisations on, the nodes profiled are the optimised
graph's: NCHWc convs (with a fused Sum/activation) and the ReorderInput/ReorderOutput nodes the
layout pass inserts. Each event is put in a stage by the spatial size of its output (a ResNet stage
is one map size) and in a kind: conv, glue (the ops a split adds: Split/Concat/Add/Sum/Slice and
layout reorders) or other. Times are fractions within one run: they say where the time goes, not
how fast the machine is.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

GLUE_OPS = frozenset({"Split", "Concat", "Add", "Sum", "Slice", "ReorderInput", "ReorderOutput"})
CONV_OPS = frozenset({"Conv", "FusedConv", "ConvTranspose", "QLinearConv", "ConvInteger"})


@dataclass(frozen=True)
class NodeTime:
    name: str
    op: str
    spatial: int | None      # output height (a stage's map size), None for a non-map output
    micros: float            # mean kernel time per run
    macs: int = 0            # a conv's multiply-accumulates (output pixels x weight elements)


BETWEEN_NODES = "(between nodes)"   # a run's time outside every kernel: the executor's dispatch
KINDS = ("conv", "glue", "other", "dispatch")


def kind_of(op: str) -> str:
    if op == BETWEEN_NODES:
        return "dispatch"
    if op in CONV_OPS:
        return "conv"
    return "glue" if op in GLUE_OPS else "other"


def _macs(event: dict) -> int:
    if event["args"].get("op_name") not in CONV_OPS:
        return 0
    inputs = event["args"].get("input_type_shape") or []
    outputs = event["args"].get("output_type_shape") or []
    if len(inputs) < 2 or not outputs:
        return 0
    weight = next(iter(inputs[1].values()))
    out = next(iter(outputs[0].values()))
    return math.prod(out[2:]) * math.prod(weight)


def _spatial(event: dict) -> int | None:
    shapes = event.get("args", {}).get("output_type_shape") or []
    for entry in shapes:
        for dims in entry.values():
            if len(dims) >= 3:
                # NCHWc tensors are 5-D [N, C/b, H, W, b]: the height is still dims[2]
                return int(dims[2])
    return None


def profile_models(models: list[onnx.ModelProto], feeds: dict[str, np.ndarray], runs: int = 20,
                   warmup: int = 3, threads: int = 2,
                   optimized_paths: list[str | None] | None = None,
                   spinning: bool = False) -> list[list[NodeTime]]:
    """Mean kernel time per run of every node of each model's optimised graph (the profiler's
    'Node' events, the first ``warmup`` runs left out); the models' runs are interleaved so that
    a change of machine load hits all of them alike (with ``spinning``, one model after the
    other)."""
    paths = optimized_paths or [None] * len(models)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = [_profiling_session(m, os.path.join(tmp, f"prof{i}"), threads, path, spinning)
                    for i, (m, path) in enumerate(zip(models, paths))]
        if spinning:        # a spinning session steals the next one's cores: one at a time
            for s in sessions:
                for _ in range(warmup + runs):
                    s.run(None, feeds)
        else:
            for r in range(warmup + runs):
                for i in range(len(sessions)):
                    sessions[(i + r) % len(sessions)].run(None, feeds)
        files = [s.end_profiling() for s in sessions]
        return [_node_times(_load(f), warmup, runs) for f in files]


def _profiling_session(model: onnx.ModelProto, prefix: str, threads: int,
                       optimized_path: str | None, spinning: bool) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = prefix
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _load(path: str) -> list[dict]:
    with open(path) as f:
        return json.load(f)


def _node_times(events: list[dict], warmup: int, runs: int) -> list[NodeTime]:
    totals: dict[str, list] = {}
    counts: dict[str, int] = defaultdict(int)
    run_times = [e["dur"] for e in events
                 if e.get("cat") == "Session" and e["name"] == "model_run"][warmup:]
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][:-len("_kernel_time")]
        counts[name] += 1
        if counts[name] <= warmup:
            continue
        entry = totals.setdefault(name, [e["args"].get("op_name", "?"), _spatial(e), 0.0,
                                         _macs(e)])
        entry[2] += e["dur"]
    nodes = [NodeTime(name, op, spatial, micros / runs, macs)
             for name, (op, spatial, micros, macs) in totals.items()]
    between = sum(run_times) / max(len(run_times), 1) - sum(n.micros for n in nodes)
    return nodes + [NodeTime(BETWEEN_NODES, BETWEEN_NODES, None, between)]


def by_stage(nodes: list[NodeTime]) -> dict[int | None, dict[str, float]]:
    """Microseconds per run by stage (output map size) and kind; nodes without a map output
    (the classifier) go to stage None."""
    out: dict[int | None, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for n in nodes:
        out[n.spatial][kind_of(n.op)] += n.micros
        out[n.spatial][f"n_{kind_of(n.op)}"] += 1
    return out


def overhead_table(original: list[NodeTime], rewritten: list[NodeTime]) -> list[str]:
    """Per stage and in total: the rewritten model's extra time and which part of it is glue,
    sub-convs over the original's convs, other ops, and time between nodes (dispatch; stage '-'),
    each as a fraction of the rewritten model's extra time."""
    a, b = by_stage(original), by_stage(rewritten)
    stages = sorted({*a, *b}, key=lambda s: -1 if s is None else -s)
    lines = [f"{'stage':>7s} {'convs':>9s} {'conv us':>15s} {'glue n: us':>15s} "
             f"{'extra us':>9s} " + " ".join(f"{k:>8s}" for k in KINDS) + f" {'conv x':>7s}"]
    total_a: dict[str, float] = defaultdict(float)
    total_b: dict[str, float] = defaultdict(float)
    for s in stages:
        for k in (*KINDS, "n_conv", "n_glue"):
            total_a[k] += a[s][k]
            total_b[k] += b[s][k]
        lines.append(_row("-" if s is None else f"{s}x{s}", a[s], b[s]))
    lines.append(_row("total", total_a, total_b))
    return lines


def _row(label: str, a: dict, b: dict) -> str:
    diff = {k: b[k] - a[k] for k in KINDS}
    extra = sum(diff.values())
    frac = " ".join(f"{diff[k] / extra if abs(extra) > 1e-9 else math.nan:8.2f}" for k in KINDS)
    conv_x = b["conv"] / a["conv"] if a["conv"] else math.nan
    return (f"{label:>7s} {int(a['n_conv']):4d}>{int(b['n_conv']):<4d} "
            f"{a['conv']:7.0f}>{b['conv']:<7.0f} "
            f"{int(b['n_glue']):3d}:{a['glue']:5.0f}>{b['glue']:<5.0f} {extra:9.0f} "
            f"{frac} {conv_x:6.2f}x")


def conv_cost_fit(*profiles: list[NodeTime]) -> str:
    """A conv's kernel time fitted as fixed + per-MAC over every conv profiled, and the time
    between nodes per node: the figures plan/cost.py's NODE_COST_IN_MACS stands for."""
    convs = [n for p in profiles for n in p if n.macs]
    if len(convs) < 2:
        return "conv cost fit: too few convs"
    macs = np.array([n.macs for n in convs], dtype=float)
    micros = np.array([n.micros for n in convs])
    per_mac, fixed = np.polyfit(macs, micros, 1, w=1 / np.maximum(micros, 1e-3))   # relative
    between = [(sum(n.micros for n in p if n.op == BETWEEN_NODES), len(p) - 1) for p in profiles]
    dispatch = ", ".join(f"{t / max(k, 1):.1f}" for t, k in between)
    return (f"conv kernel time ~ {fixed:.1f} us + {per_mac * 1e3:.4f} ns/MAC x MACs (fit over "
            f"{len(convs)} convs): a conv's fixed cost ~ {fixed / per_mac / 1e6:.2f} M MACs; "
            f"between nodes {dispatch} us per node ({dispatch.count(',') + 1} models)")
