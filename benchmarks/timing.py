"""Side-by-side onnxruntime timing that survives a noisy 2-core machine (see shared/FACTS.md).

Thread-pool spinning is off (two sessions in one process otherwise steal each other's cores),
the order alternates every round, and callers time a model against a copy of itself as a
control: a ratio is only meaningful next to its control's distance from 1.00.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort


def session(model: onnx.ModelProto, threads: int = 2,
            optimized_path: str | None = None, spinning: bool = False) -> ort.InferenceSession:
    """A CPU session; ``spinning`` keeps onnxruntime's default of worker threads spinning between
    ops (what a user's single session gets), which only time_in_blocks can time fairly."""
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def time_side_by_side(models: list[onnx.ModelProto], feeds: dict[str, np.ndarray],
                      rounds: int = 30, warmup: int = 3, threads: int = 2,
                      spinning: bool = False) -> list[float]:
    """Median seconds per run of each model, runs interleaved and the order rotated per round
    (with ``spinning``, in blocks: see time_in_blocks)."""
    sessions = [session(m, threads, spinning=spinning) for m in models]
    fns = [lambda s=s: s.run(None, feeds) for s in sessions]
    if spinning:
        return time_in_blocks(fns, rounds, warmup)
    return time_callables(fns, rounds, warmup)


def time_in_blocks(fns: list, rounds: int = 30, settle: int = 2, block: int = 5) -> list[float]:
    """Median seconds per call of each function, called ``block`` times in a row after ``settle``
    untimed calls, the blocks interleaved and their order rotated: with spinning on, a session's
    threads keep spinning after its run and would steal the next session's cores, so each block
    starts once the previous session's threads have stopped."""
    samples: list[list[float]] = [[] for _ in fns]
    for r in range(-(-rounds // block)):
        order = list(range(len(fns)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            for _ in range(settle):
                fns[i]()
            for _ in range(block):
                start = time.perf_counter()
                fns[i]()
                samples[i].append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


def time_callables(fns: list, rounds: int = 30, warmup: int = 3) -> list[float]:
    """Median seconds per call of each function, calls interleaved, the order rotated per round
    (any contenders: onnxruntime sessions, TVM functions)."""
    for f in fns:
        for _ in range(warmup):
            f()
    samples: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        order = list(range(len(fns)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            start = time.perf_counter()
            fns[i]()
            samples[i].append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


def copy_of(model: onnx.ModelProto) -> onnx.ModelProto:
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    return twin
