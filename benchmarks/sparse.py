"""Sparse convolution on CPU, side by side in one run: our rulebook build and gather-GEMM-scatter
(numpy, our TVM kernel, and the ONNX lowering on onnxruntime in both rulebook forms) against spconv
2.3.8's CPU build on the same data, and against a dense conv at the same density. 64 -> 64
channels, k = 3, float32.

Cases: 3-D 50,000 random voxels in 400x400x40 (submanifold; regular stride 1 pad 1; regular stride
2 pad 1), a LiDAR-like scan (~120,000 voxels on 74 rings in 1600x1600x40, ~6 neighbours each;
submanifold), 2-D 20,000 random pixels in 512x512 (submanifold).

Threads: spconv runs with one OpenMP thread (its CPU scatter-add races on more than one; the run
shows it), and so do we: numpy's BLAS, onnxruntime and TVM get one thread, the rulebook is
single-threaded numpy (the TVM kernel is also timed on 2). Our results are compared bit for bit on
1 and 2 threads.

spconv lives in its own virtual environment (torch + spconv are no dependency of ours): give its
python with --spconv-python (default: $SPCONV_PYTHON, else /tmp/spconv-venv/bin/python). It runs
in a subprocess of this script, never at the same time as our timings. Without it the comparison
columns say "absent".

Timing as shared/FACTS.md says: onnxruntime spinning off, contenders interleaved with the order
rotated each round, medians, and a control (ours against itself) next to every ratio.

Run: python benchmarks/sparse.py [--rounds 15] [--quick] [--no-dense]        (not a test)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")            # before numpy loads its BLAS
os.environ.setdefault("TVM_NUM_THREADS", "2")   # TVM's pool size: runs pick 1 or 2 of them

import numpy as np  # noqa: E402

CHANNELS = 64
DEFAULT_SPCONV = "/tmp/spconv-venv/bin/python"


@dataclass(frozen=True)
class Case:
    name: str
    grid: tuple[int, ...]
    data: str                   # "random" or "lidar"
    count: int
    submanifold: bool
    stride: int = 1
    pad: int = 1


CASES = [
    Case("3-D 50k random, SubM", (400, 400, 40), "random", 50_000, True),
    Case("3-D 50k random, regular s1 p1", (400, 400, 40), "random", 50_000, False, 1, 1),
    Case("3-D 50k random, regular s2 p1", (400, 400, 40), "random", 50_000, False, 2, 1),
    Case("LiDAR-like rings, SubM", (1600, 1600, 40), "lidar", 0, True),
    Case("2-D 20k of 512x512, SubM", (512, 512), "random", 20_000, True),
]


# ---------------------------------------------------------------- data (numpy only)

def random_sites(count: int, grid, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flat = rng.choice(int(np.prod(grid)), count, replace=False)
    sites = np.stack(np.unravel_index(flat, grid), axis=1)
    return np.concatenate([np.zeros((count, 1), np.int64), sites], axis=1).astype(np.int32)


def lidar_like(seed: int = 0, grid=(1600, 1600, 40), beams: int = 74) -> np.ndarray:
    """Ground returns of a spinning LiDAR 20 voxels up: one ring per beam (elevation -1.3 to
    -24.8 degrees), the ground undulating by +-2 voxels, two voxels thick, 0.3 voxel noise."""
    rng = np.random.default_rng(seed)
    cx, cy = grid[0] / 2, grid[1] / 2
    radii = 20.0 / np.tan(np.radians(np.linspace(1.3, 24.8, beams)))
    radii = radii[(radii > 8) & (radii < min(cx, cy) - 2)]
    points = []
    for i, r in enumerate(radii):
        n = int(2 * np.pi * r)
        phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
        z = 8 + 2.0 * np.sin(3 * phi + i) + rng.normal(0, 0.3, n)
        rr = r + rng.normal(0, 0.3, n)
        for dz in (0, 1):
            points.append(np.stack([cx + rr * np.cos(phi), cy + rr * np.sin(phi), z + dz], 1))
    p = np.floor(np.concatenate(points)).astype(np.int64)
    p = np.unique(p[(p >= 0).all(1) & (p < np.asarray(grid)).all(1)], axis=0)
    rng.shuffle(p)
    return np.concatenate([np.zeros((len(p), 1), np.int64), p], axis=1).astype(np.int32)


def case_data(case: Case, seed: int = 0):
    coords = lidar_like(seed, case.grid) if case.data == "lidar" else \
        random_sites(case.count, case.grid, seed)
    rng = np.random.default_rng(seed + 1)
    features = rng.uniform(-1, 1, (len(coords), CHANNELS)).astype(np.float32)
    rank = len(case.grid)
    weight = (rng.standard_normal((CHANNELS, CHANNELS, *[3] * rank))
              / np.sqrt(CHANNELS * 3 ** rank)).astype(np.float32)     # ONNX [Cout, Cin, k...]
    return coords, features, weight


def median(values) -> float:
    return float(np.median(values))


def timed(fn, rounds: int) -> float:
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return median(samples)


# ---------------------------------------------------------------- spconv side (its own venv)

def spconv_worker(npz: str, out: str, rounds: int, repeats: int) -> None:
    """Runs under spconv's python: times its native CPU rulebook and gather-GEMM-scatter, and
    saves the outputs (``repeats`` forward runs, to see whether they agree)."""
    import torch
    import spconv.pytorch as sp
    from spconv.core import ConvAlgo
    from spconv.pytorch import ops
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    d = np.load(npz)
    grid = d["grid"].tolist()
    rank, sub = len(grid), bool(d["submanifold"])
    stride, pad = int(d["stride"]), int(d["pad"])
    indices = torch.from_numpy(d["coords"])
    features = torch.from_numpy(d["features"])
    weight = torch.from_numpy(d["weight_spconv"])            # [Cout, k..., Cin]
    k, s, p = [3] * rank, [1 if sub else stride] * rank, [1 if sub else pad] * rank
    one = [1] * rank

    def rulebook():
        return ops.get_indice_pairs(indices, 1, grid, ConvAlgo.Native, k, s, p, one, [0] * rank,
                                    sub, False)

    outids, pairs, pair_num = rulebook()

    def compute():
        return ops.indice_conv(features, weight, pairs, pair_num, outids.shape[0], False, sub)

    cls = {(2, True): sp.SubMConv2d, (3, True): sp.SubMConv3d, (2, False): sp.SparseConv2d,
           (3, False): sp.SparseConv3d}[rank, sub]
    kwargs = {} if sub else {"stride": stride, "padding": pad}
    module = cls(CHANNELS, CHANNELS, 3, bias=False, algo=ConvAlgo.Native, **kwargs)
    with torch.no_grad():
        module.weight.copy_(weight)

    def forward():
        x = sp.SparseConvTensor(features, indices, grid, 1)
        with torch.no_grad():
            return module(x)

    times = {"rulebook": timed(rulebook, rounds), "compute": timed(compute, rounds),
             "forward": timed(forward, rounds)}
    runs = [forward() for _ in range(repeats)]
    np.savez(out, indices=runs[0].indices.numpy(),
             **{f"features{i}": r.features.numpy() for i, r in enumerate(runs)},
             times=json.dumps(times), threads=torch.get_num_threads())


def run_spconv(python: str | None, case: Case, coords, features, weight, rounds: int,
               threads: int, repeats: int, tmp: Path) -> dict | None:
    if python is None:
        return None
    from convrewrite.sparse import spconv_weight_from_onnx
    npz, out = tmp / "case.npz", tmp / f"spconv_{threads}.npz"
    np.savez(npz, coords=coords, features=features, weight_spconv=spconv_weight_from_onnx(weight),
             grid=np.asarray(case.grid), submanifold=case.submanifold, stride=case.stride,
             pad=case.pad)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([python, __file__, "--spconv-worker", str(npz), str(out), str(rounds),
                           str(repeats)], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        print(f"  spconv failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    d = np.load(out)
    return {"times": json.loads(str(d["times"])), "indices": d["indices"],
            "features": [d[f"features{i}"] for i in range(repeats)]}


def find_spconv(arg: str | None) -> str | None:
    python = arg or os.environ.get("SPCONV_PYTHON") or DEFAULT_SPCONV
    if not Path(python).exists():
        return None
    probe = subprocess.run([python, "-c", "import spconv, torch; print(spconv.__version__, "
                            "torch.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    print(f"spconv {probe.stdout.strip()} (python {python}), 1 OpenMP thread")
    return python


# ---------------------------------------------------------------- our side

def keyed(coords: np.ndarray, features: np.ndarray) -> dict:
    return dict(zip(map(tuple, coords.tolist()), features))


def max_keyed_error(ours_c, ours_f, ref_c, ref_f) -> tuple[bool, float]:
    """(same site set, max |difference|) comparing rows by coordinate, never by position."""
    order_a = np.lexsort(ours_c.T[::-1])
    order_b = np.lexsort(ref_c.T[::-1])
    if len(order_a) != len(order_b) or not np.array_equal(ours_c[order_a], ref_c[order_b]):
        return False, float("nan")
    return True, float(np.abs(ours_f[order_a] - ref_f[order_b]).max())


def ort_session(model, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def lowered(case: Case, coords, weight, constant: bool):
    from convrewrite.models.sparse_nets import sparse_conv_model
    from convrewrite.pipeline import rewrite_model
    from convrewrite.sparse import SparseConvAttrs
    from convrewrite.target import load_target
    rank = len(case.grid)
    attrs = SparseConvAttrs.create([3] * rank, case.grid,
                                   None if case.submanifold else [case.stride] * rank,
                                   None if case.submanifold else [case.pad] * (2 * rank),
                                   None, case.submanifold)
    model = sparse_conv_model(attrs, weight, coords=coords if constant else None)
    return rewrite_model(model, load_target({"name": "host"}))[0], attrs


def dense_seconds(case: Case, weight, rounds: int) -> float | None:
    """A dense ONNX Conv on the whole grid (zeros but for the sites: the time does not depend on
    the values), 1 thread; None when it would not fit in half the memory."""
    from onnx import helper, numpy_helper
    rank = len(case.grid)
    volume = int(np.prod(case.grid))
    need = 2 * volume * CHANNELS * 4
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > total / 2:
        return None
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * (2 * rank))], "dense",
        [helper.make_tensor_value_info("x", 1, [1, CHANNELS, *case.grid])],
        [helper.make_tensor_value_info("y", 1, None)], [numpy_helper.from_array(weight, "w")])
    sess = ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.zeros((1, CHANNELS, *case.grid), np.float32)
    return timed(lambda: sess.run(None, {"x": x}), rounds)


def determinism_worker(case_index: int, out: str) -> None:
    """Saves our numpy result twice (run under a given OPENBLAS_NUM_THREADS)."""
    from convrewrite.sparse import SparseConvAttrs, sparse_conv
    case = CASES[case_index]
    coords, features, weight = case_data(case)
    rank = len(case.grid)
    attrs = SparseConvAttrs.create([3] * rank, case.grid,
                                   None if case.submanifold else [case.stride] * rank,
                                   None if case.submanifold else [case.pad] * (2 * rank),
                                   None, case.submanifold)
    first = sparse_conv(features, coords, weight, attrs=attrs)[0]
    np.savez(out, first=first, second=sparse_conv(features, coords, weight, attrs=attrs)[0])


def numpy_threads(case_index: int, tmp: Path) -> str:
    """Our numpy result on 1 and 2 BLAS threads (subprocesses), two runs each."""
    runs = {}
    for threads in (1, 2):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        out = tmp / f"numpy_{threads}.npz"
        subprocess.run([sys.executable, __file__, "--determinism-worker", str(case_index),
                        str(out)], check=True, env=env, timeout=3600)
        runs[threads] = np.load(out)
    same_runs = all(np.array_equal(r["first"], r["second"]) for r in runs.values())
    same = np.array_equal(runs[1]["first"], runs[2]["first"])
    diff = float(np.abs(runs[1]["first"] - runs[2]["first"]).max())
    return (f"run to run identical on 1 and on 2 threads: {same_runs}; 1 vs 2 threads identical: "
            f"{same} (max |diff| {diff:.1e}: OpenBLAS's sgemm rounds differently per thread "
            f"count; no race, each tap scatters into distinct rows)")


def bench_tvm(rb, features, taps, expected, rounds: int) -> dict | None:
    """Our TVM kernel (output-major rulebook, 1 and 2 threads), or None without TVM."""
    try:
        import tvm
        from convrewrite.tvm.kernels.sparse_conv import SparseConvKernel, output_major
    except ImportError:
        print("  TVM absent: no TVM kernel")
        return None
    from timing import time_callables
    kernel = SparseConvKernel(taps.shape[1], taps.shape[2], taps.shape[0])
    t_layout = time_callables([lambda: output_major(rb)], rounds)[0]
    args = kernel.tensors(features, output_major(rb), taps)
    config = tvm.get_global_func("runtime.config_threadpool")
    times, outs = {}, {}
    for threads in (1, 2):
        config(0, threads)
        times[threads] = time_callables([lambda: kernel.run(args)], rounds)[0]
        outs[threads] = args[-1].numpy().copy()
    config(0, 1)
    same = np.array_equal(outs[1], outs[2])
    err = float(np.abs(outs[1] - expected).max())
    print(f"  ours  TVM kernel (LLVM) {ms(times[1])} on 1 thread, {ms(times[2])} on 2   output-major"
          f" layout {ms(t_layout)}   vs numpy max |diff| {err:.1e}; 1 vs 2 threads bit-identical:"
          f" {same}")
    return {"tvm_kernel": times[1], "tvm_kernel_2_threads": times[2], "tvm_layout": t_layout,
            "tvm_threads_identical": same}


def ms(seconds: float | None) -> str:
    return "absent" if seconds is None else f"{seconds * 1e3:8.1f} ms"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:6.2f}x"


def bench_case(index: int, case: Case, args, spconv: str | None, tmp: Path) -> dict:
    from convrewrite.sparse import build_rulebook, execute, tap_weights
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from timing import time_callables
    coords, features, weight = case_data(case)
    graph_model, attrs = lowered(case, coords, weight, constant=False)
    rb = build_rulebook(coords, attrs)
    density = len(coords) / np.prod(case.grid)
    print(f"\n== {case.name}: {len(coords)} sites ({density:.2%} of the grid), "
          f"{rb.num_out} out, {rb.num_pairs} pairs ({rb.num_pairs / len(coords):.1f} per site)")
    taps = tap_weights(weight)
    rounds = args.rounds if rb.num_pairs < 500_000 else max(3, args.rounds // 3)
    t_rb, t_rb_ctl = time_callables([lambda: build_rulebook(coords, attrs)] * 2, rounds)
    t_ex, t_ex_ctl = time_callables([lambda: execute(rb, features, taps)] * 2, rounds)
    ours_f = execute(rb, features, taps)
    const_model, _ = lowered(case, coords, weight, constant=True)
    s_const, s_graph = ort_session(const_model), ort_session(graph_model)
    feeds_graph = {"features": features, "coordinates": coords}
    t_const, t_graph = time_callables([lambda: s_const.run(None, {"features": features}),
                                       lambda: s_graph.run(None, feeds_graph)], rounds)
    got_graph = s_graph.run(None, feeds_graph)
    two = ort_session(graph_model, threads=2).run(None, feeds_graph)
    ort_same_threads = all(np.array_equal(a, b) for a, b in zip(got_graph, two))
    ort_err = float(np.abs(got_graph[0] - ours_f).max())
    sites_same = np.array_equal(got_graph[1], rb.out_coords)
    result = {"case": case.name, "sites": len(coords), "pairs": rb.num_pairs,
              "ours_rulebook": t_rb, "ours_rulebook_control": t_rb_ctl, "ours_execute": t_ex,
              "ours_execute_control": t_ex_ctl, "ort_precomputed": t_const, "ort_graph": t_graph}
    print(f"  ours  rulebook {ms(t_rb)}  (control {ratio(t_rb_ctl, t_rb)})   numpy gather-GEMM-"
          f"scatter {ms(t_ex)}  (control {ratio(t_ex_ctl, t_ex)})   numpy total {ms(t_rb + t_ex)}")
    print(f"  ours  onnxruntime: precomputed rulebook (compute only) {ms(t_const)}   in-graph "
          f"rulebook + compute {ms(t_graph)}")
    print(f"  ours  onnxruntime vs numpy: sites equal {sites_same}, max |diff| {ort_err:.2e}; "
          f"onnxruntime 1 vs 2 threads bit-identical: {ort_same_threads}")
    if index in args.determinism:
        print(f"  ours  numpy: {numpy_threads(index, tmp)}")
    tvm_times = bench_tvm(rb, features, taps, ours_f, rounds)
    if tvm_times is not None:
        result.update(tvm_times)
    sp1 = run_spconv(spconv, case, coords, features, weight, rounds, 1, 2, tmp)
    if sp1 is not None:
        t = sp1["times"]
        same, err = max_keyed_error(rb.out_coords, ours_f, sp1["indices"], sp1["features"][0])
        result.update(spconv=t, spconv_same_sites=same, spconv_max_err=err)
        print(f"  spconv rulebook {ms(t['rulebook'])}   compute {ms(t['compute'])}   forward "
              f"{ms(t['forward'])}   (1 thread; sites equal to ours: {same}, max |diff| keyed by "
              f"coordinate {err:.2e})")
        print(f"  RATIO rulebook ours/spconv {ratio(t_rb, t['rulebook'])} (goal <= 1)   compute "
              f"numpy/spconv {ratio(t_ex, t['compute'])}   end to end: numpy/spconv "
              f"{ratio(t_rb + t_ex, t['forward'])}, onnxruntime in-graph/spconv "
              f"{ratio(t_graph, t['forward'])}, onnxruntime precomputed/spconv compute "
              f"{ratio(t_const, t['compute'])}")
        if tvm_times is not None:
            e2e = t_rb + tvm_times["tvm_layout"] + tvm_times["tvm_kernel"]
            print(f"  RATIO TVM kernel/spconv compute {ratio(tvm_times['tvm_kernel'], t['compute'])}"
                  f"   end to end rulebook + layout + TVM kernel / spconv forward "
                  f"{ratio(e2e, t['forward'])} (goal <= 1)")
        if index in args.race:
            sp2 = run_spconv(spconv, case, coords, features, weight, 1, 2, 3, tmp)
            if sp2 is not None:
                errs = [max_keyed_error(rb.out_coords, ours_f, sp2["indices"], f)[1]
                        for f in sp2["features"]]
                agree = all(np.array_equal(sp2["features"][0], f) for f in sp2["features"][1:])
                result["spconv_2_threads_max_err"] = max(errs)
                print(f"  spconv on 2 threads: max |diff| to ours {max(errs):.2e} over 3 runs; "
                      f"the 3 runs identical: {agree}")
    else:
        print("  spconv absent: no comparison")
    if args.dense and index in args.dense_cases:
        t_dense = dense_seconds(case, weight, 2 if len(case.grid) == 3 else rounds)
        result["dense"] = t_dense
        if t_dense is None:
            print("  dense conv: does not fit in memory, not run")
        else:
            print(f"  dense ONNX Conv on the whole grid (1 thread) {ms(t_dense)}   RATIO dense/ours:"
                  f" onnxruntime in-graph {ratio(t_dense, t_graph)}, numpy {ratio(t_dense, t_rb + t_ex)}"
                  f" (goal >= 5x at <= 2% density; this is {density:.2%})")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="3 rounds, no dense conv, first case")
    p.add_argument("--no-dense", dest="dense", action="store_false")
    p.add_argument("--spconv-python", help="python of a venv with torch and spconv 2.3.8")
    p.add_argument("--json", help="write the numbers here too")
    p.add_argument("--spconv-worker", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--determinism-worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.spconv_worker:
        npz, out, rounds, repeats = args.spconv_worker
        return spconv_worker(npz, out, int(rounds), int(repeats))
    if args.determinism_worker is not None:
        return determinism_worker(int(args.determinism_worker[0]), args.determinism_worker[1])
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    cases = list(enumerate(CASES))
    if args.quick:
        args.rounds, args.dense, cases = 3, False, cases[:1]
    args.determinism = {0, 3}           # numpy on 1 vs 2 BLAS threads (subprocesses)
    args.race = {0, 3}                  # spconv on 2 OpenMP threads
    args.dense_cases = {0, 4}           # 3-D at 0.78% density, 2-D at 7.6%
    spconv = find_spconv(args.spconv_python)
    if spconv is None:
        print("spconv absent (no --spconv-python, $SPCONV_PYTHON or /tmp/spconv-venv with torch "
              "and spconv): our numbers only")
    print(f"numpy {np.__version__}, 1 BLAS thread; onnxruntime 1 intra-op thread, spinning off")
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_case(i, case, args, spconv, Path(tmp)) for i, case in cases]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
