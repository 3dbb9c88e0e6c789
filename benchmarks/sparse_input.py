"""A dense conv net run on mostly-zero inputs, rewritten with ``--sparse-input`` (one sparse
region, densified at the output) against the dense original, on onnxruntime, one thread (thread
CPU time), side by side with a control (the original against a copy of itself).

Nets: 2-D 16 -> 32 -> 32 on 128x128 (3x3, bias, ReLU: the second conv reads a non-zero
background, so it runs over a background map), and 3-D 4 -> 16 -> 16 on 64x64x32; inputs with
0.5%, 2% and 10% of the sites active, each spread two ways: at random (every site on its own:
the worst case, a regular 3x3 conv takes 2% of the sites to ~17%, two to ~40%; 3x3x3: ~42%, ~90%)
and clustered (blobs of ~40 sites, as LiDAR returns and masked patches come: a regular conv
dilates a blob only at its rim). Each row prints the active fraction after each conv, the ideal
MAC ratio (sparse MACs / dense MACs: the rulebook's pairs, and output-major, every active
output's whole window, what the implicit GEMM multiplies) beside the measured time ratio, for
the model rewritten with ``x:FRACTION`` (the cost plan: each conv sparse only where cheaper,
``sparse.plan``; the record's choice is printed) and with ``x:all`` (every conv sparse). Then
the masked-image net (submanifold convs) with its mask named.

``--calibrate`` times single convs sparse (``x:all``) and dense at 0.5-20% random sites and fits
the cost constants the plan uses (``plan/cost.py``).

Run: python benchmarks/sparse_input.py [--rounds 20] [--calibrate]   (not a test; ~3 min idle)
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import copy_of, session  # noqa: E402

NETS = {"2-D 16-32-32 on 128x128": (16, [32, 32], (128, 128)),
        "3-D 4-16-16 on 64x64x32": (4, [16, 16], (64, 64, 32))}
DENSITIES = (0.005, 0.02, 0.1)
BLOB_SITES = 40


def dense_net(cin: int, widths: list[int], grid, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    rank = len(grid)
    nodes, inits, x, c = [], [], "x", cin
    for i, w in enumerate(widths):
        weight = rng.standard_normal((w, c, *[3] * rank)) * np.sqrt(2 / (c * 3 ** rank))
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.uniform(-0.1, 0.1, w).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1] * (2 * rank)),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x, c = f"r{i}", w
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, [1, cin, *grid])],
        [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def random_sites(rng, grid, density: float) -> np.ndarray:
    """[*grid] bool: every site active with probability ``density``, on its own."""
    return rng.random(grid) < density


def clustered_sites(rng, grid, density: float) -> np.ndarray:
    """[*grid] bool: balls of about BLOB_SITES sites at random centres until ``density`` of the
    grid is active."""
    rank = len(grid)
    radius = (BLOB_SITES / (np.pi if rank == 2 else 4 / 3 * np.pi)) ** (1 / rank)
    r = int(np.ceil(radius))
    offsets = np.array([o for o in itertools.product(range(-r, r + 1), repeat=rank)
                        if np.sum(np.square(o)) <= radius ** 2])
    active = np.zeros(grid, bool)
    target = density * active.size
    while active.sum() < target:
        at = offsets + rng.integers(0, grid)
        inside = np.all((at >= 0) & (at < np.asarray(grid)), axis=1)
        active[tuple(at[inside].T)] = True
    return active


def dilate(active: np.ndarray) -> np.ndarray:
    """The output sites of a regular 3^D conv (pad 1, stride 1) over these sites."""
    padded = np.pad(active, 1)
    out = np.zeros_like(active)
    for off in itertools.product(range(3), repeat=active.ndim):
        out |= padded[tuple(slice(o, o + n) for o, n in zip(off, active.shape))]
    return out


def window_counts(active: np.ndarray) -> np.ndarray:
    """Per site, the active sites in its 3^D window (the rulebook's pairs per output)."""
    padded = np.pad(active.astype(np.int64), 1)
    out = np.zeros(active.shape, np.int64)
    for off in itertools.product(range(3), repeat=active.ndim):
        out += padded[tuple(slice(o, o + n) for o, n in zip(off, active.shape))]
    return out


def layer_stats(active: np.ndarray, cin: int, widths: list[int]) -> tuple[list[float], float,
                                                                          float]:
    """(active fraction after each conv, pair MACs / dense MACs, output-major MACs / dense)."""
    volume, taps = active.size, 3 ** active.ndim
    fractions, dense, pairs, output_major, c = [], 0, 0, 0, cin
    for w in widths:
        nxt = dilate(active)
        dense += volume * taps * c * w
        pairs += int(window_counts(active)[nxt].sum()) * c * w
        output_major += int(nxt.sum()) * taps * c * w
        fractions.append(float(nxt.mean()))
        active, c = nxt, w
    return fractions, pairs / dense, output_major / dense


def plan_of(result) -> str:
    """Which convs the record says run sparse, and which were left dense."""
    region = [r for r in result.records if r.pass_name == "dense_to_sparse"]
    names = re.findall(r"[\[ ]([^ \[]+) \((?:regular|submanifold) ", region[0].rewrite) if region else []
    dense = [n.split(": left dense")[0] for n in result.recognised if ": left dense" in n]
    return f"sparse {'+'.join(names) or '-'}, dense {'+'.join(dense) or '-'}"


def rewritten(model, spec: str, sample: dict | None = None):
    from convrewrite.pipeline import rewrite_model
    from convrewrite.target import load_target
    return rewrite_model(model, load_target({"name": "host"}), sparse_inputs=[spec],
                         sparse_samples=sample)


def net_case(label: str, cin: int, widths: list[int], grid, rounds: int) -> None:
    model = dense_net(cin, widths, grid)
    plans = {density: rewritten(model, f"x:{density}") for density in DENSITIES}
    forced, _ = rewritten(model, "x:all")
    print(f"\n== {label}: regular 3x3 convs, --sparse-input x:FRACTION (the plan) and x:all")
    dense, twin, every = session(model, 1), session(copy_of(model), 1), session(forced, 1)
    rng = np.random.default_rng(1)
    for density, (kind, spread) in itertools.product(DENSITIES, (("random", random_sites),
                                                                 ("clustered", clustered_sites))):
        planned_model, result = plans[density]
        planned = session(planned_model, 1)
        keep = spread(rng, grid, density)
        x = {"x": (rng.uniform(-1, 1, (1, cin, *grid)) * keep).astype(np.float32)}
        given_model, given_result = rewritten(model, "x", x)
        given = session(given_model, 1)
        fractions, pair_ratio, output_ratio = layer_stats(keep, cin, widths)
        t_dense, t_twin, t_plan, t_given, t_all = time_callables(
            [lambda: dense.run(None, x), lambda: twin.run(None, x), lambda: planned.run(None, x),
             lambda: given.run(None, x), lambda: every.run(None, x)], rounds)
        want = dense.run(None, x)[0]
        err = max(float(np.abs(s.run(None, x)[0] - want).max()) for s in (planned, given, every))
        active = " -> ".join(f"{f:.1%}" for f in [float(keep.mean())] + fractions)
        print(f"  {density:5.1%} {kind:9s} active {active}; ideal MACs {pair_ratio:.2f} (pairs), "
              f"{output_ratio:.2f} (output-major) of dense; max |diff| {err:.1e}")
        print(f"        dense {t_dense * 1e3:7.2f} ms (control {t_twin / t_dense:.2f}); "
              f"planned by x:{density} [{plan_of(result)}] {t_plan / t_dense:.2f}x; by this "
              f"input [{plan_of(given_result)}] {t_given / t_dense:.2f}x; every conv sparse "
              f"{t_all / t_dense:.2f}x (goal <= 0.25 at <= 2%)")


def masked_net_case(rounds: int) -> None:
    """The masked-image net (submanifold convs: the sites stay the mask's), 128x128, mask named."""
    from convrewrite.models.sparse_nets import masked_conv_net, random_mask
    model = masked_conv_net(image_size=128, in_channels=16, width=32)
    print("\n== masked-image net 16-32 (SubM, SubM, strided, 1x1) on 128x128, --sparse-input "
          "mask:FRACTION")
    dense, twin = session(model, 1), session(copy_of(model), 1)
    every = session(rewritten(model, "mask:all")[0], 1)
    rng = np.random.default_rng(2)
    for density in DENSITIES:
        planned_model, result = rewritten(model, f"mask:{density}")
        sparse = session(planned_model, 1)
        x = {"image": rng.uniform(-1, 1, (1, 16, 128, 128)).astype(np.float32),
             "mask": random_mask(128, density, seed=3)}
        t_dense, t_twin, t_sparse, t_all = time_callables(
            [lambda: dense.run(None, x), lambda: twin.run(None, x), lambda: sparse.run(None, x),
             lambda: every.run(None, x)], rounds)
        want = dense.run(None, x)[0]
        err = max(float(np.abs(s.run(None, x)[0] - want).max()) for s in (sparse, every))
        print(f"  {density:5.1%} visible: dense {t_dense * 1e3:7.2f} ms (control "
              f"{t_twin / t_dense:.2f}), planned [{plan_of(result)}] {t_sparse / t_dense:.2f}x, "
              f"every conv sparse {t_all / t_dense:.2f}x the dense time; max |diff| {err:.1e}")


def time_callables(fns: list, rounds: int, warmup: int = 2) -> list[float]:
    """Median thread CPU seconds per call of each function, calls interleaved, the order rotated
    per round: onnxruntime on 1 thread runs in the caller's thread, so what other processes on
    the machine take does not count (their cache pressure still does: read the control)."""
    for f in fns:
        for _ in range(warmup):
            f()
    samples: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        for i in [(r + j) % len(fns) for j in range(len(fns))]:
            start = time.thread_time()
            fns[i]()
            samples[i].append(time.thread_time() - start)
    return [statistics.median(s) for s in samples]


def cpu_time(fn, rounds: int) -> float:
    return time_callables([fn], rounds)[0]


def calibrate(rounds: int) -> None:
    """Single regular 3^D convs, sparse (``x:all``) and dense, at 0.5-20% random sites; the
    least-squares fit (relative error) of the sparse time to per-row-tap, per-MAC and per dense
    element terms, and the dense conv's seconds per MAC -- the constants of ``plan/cost.py``."""
    cases = [(16, 32, (128, 128)), (32, 32, (128, 128)), (4, 16, (64, 64, 32)),
             (16, 16, (64, 64, 32))]
    rows, times = [], []
    rng = np.random.default_rng(1)
    for cin, cout, grid in cases:
        model = dense_net(cin, [cout], grid)
        dense, sparse = session(model, 1), session(rewritten(model, "x:all")[0], 1)
        volume, taps = int(np.prod(grid)), 3 ** len(grid)
        t_dense = cpu_time(lambda: dense.run(None, {"x": np.zeros((1, cin, *grid), np.float32)}),
                           rounds)
        print(f"{cin} -> {cout} on {grid}: dense {t_dense * 1e3:.2f} ms = "
              f"{t_dense / (volume * taps * cin * cout) * 1e12:.1f} ps per MAC")
        for density in (0.005, 0.02, 0.05, 0.1, 0.2):
            keep = random_sites(rng, grid, density)
            x = {"x": (rng.uniform(-1, 1, (1, cin, *grid)) * keep).astype(np.float32)}
            outputs = int(dilate(keep).sum())
            t = cpu_time(lambda: sparse.run(None, x), rounds)
            rows.append([outputs * taps, outputs * taps * cin * cout, volume * (cin + cout)])
            times.append(t)
            print(f"  {density:5.1%} random -> {outputs / volume:.1%} outputs: sparse "
                  f"{t * 1e3:.2f} ms = {t / t_dense:.2f}x dense")
    a, y = np.asarray(rows, float), np.asarray(times)
    fit = np.linalg.lstsq(a / y[:, None], np.ones(len(y)), rcond=None)[0]
    worst = float(np.max(np.abs(a @ fit / y - 1)))
    print(f"fit: {fit[0] * 1e9:.1f} ns per row-tap, {fit[1] * 1e12:.1f} ps per MAC, "
          f"{fit[2] * 1e9:.2f} ns per dense element (worst case off by {worst:.0%})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--calibrate", action="store_true")
    args = p.parse_args()
    if args.calibrate:
        calibrate(args.rounds)
        return
    for label, (cin, widths, grid) in NETS.items():
        net_case(label, cin, widths, grid, args.rounds)
    masked_net_case(args.rounds)


if __name__ == "__main__":
    main()
