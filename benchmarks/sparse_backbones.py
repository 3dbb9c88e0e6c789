"""Whole sparse backbones on CPU, one thread, side by side (the companion of sparse.py, which times
single convs): spconv 2.3.8's forward against our ONNX lowering on onnxruntime (rulebooks
precomputed, and built in the graph), our ``--tvm llvm`` build (our gather-GEMM kernel, rulebooks
built on the host per input) and the dense network at the same density where it fits in memory.

Backbones (3x3x3 / 2x2x2 kernels, BatchNorm + ReLU after every conv, float32):
* ``middle``: a SECOND / CenterPoint-style middle encoder, SubM 16 -> strided 32 -> SubM 32 ->
  strided 64 -> SubM 64, on a LiDAR-like scan of ~120k voxels in 1600x1600x40 (4 input features);
* ``unet``: a small sparse encoder-decoder (U-Net shape): SubM 16, 2x2x2 down 32, SubM 32, down
  64, SubM 64, inverse convs back up 32 and 16 onto the saved sites (the SubM layers there reuse
  the encoder's rulebooks), SubM 1x1 head, on a LiDAR-like scan in 400x400x40. SparseSequential
  has no concatenation, so the skip joins of a full U-Net are not in it (our own
  ``models.sparse_nets.sparse_unet_3d`` has them).

The spconv net is built in spconv's own environment (``scripts/spconv_venv.sh``), read by our
converter (``sparse.spconv_import.describe``) and converted (``to_onnx``): every contender runs the
same weights. spconv runs in a subprocess, before our timings (one OpenMP thread: its CPU
scatter-add races on more); our contenders are interleaved with the order rotated each round,
onnxruntime spinning off, next to a control (a contender against itself). Outputs are compared
with spconv's keyed by coordinate, and ours on 1 and 2 threads bit for bit.

Run: python benchmarks/sparse_backbones.py [--rounds 5] [--only middle|unet]   (not a test;
about 4 min for both on an idle 2-core machine, most of it the dense U-Net and the first builds)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparse import find_spconv, lidar_like, ms, ort_session, ratio  # noqa: E402
from timing import time_callables  # noqa: E402

# layer specs: (kind, cin, cout, kernel, stride, padding, indice_key) | ("bn", c) | ("relu",)
MIDDLE = [("subm", 4, 16, 3, 1, 0, "subm1"), ("bn", 16), ("relu",),
          ("conv", 16, 32, 3, 2, 1, "down2"), ("bn", 32), ("relu",),
          ("subm", 32, 32, 3, 1, 0, "subm2"), ("bn", 32), ("relu",),
          ("conv", 32, 64, 3, 2, 1, "down3"), ("bn", 64), ("relu",),
          ("subm", 64, 64, 3, 1, 0, "subm3"), ("bn", 64), ("relu",)]
UNET = [("subm", 4, 16, 3, 1, 0, "subm0"), ("bn", 16), ("relu",),
        ("conv", 16, 32, 2, 2, 0, "down1"), ("bn", 32), ("relu",),
        ("subm", 32, 32, 3, 1, 0, "subm1"), ("bn", 32), ("relu",),
        ("conv", 32, 64, 2, 2, 0, "down2"), ("bn", 64), ("relu",),
        ("subm", 64, 64, 3, 1, 0, "subm2"), ("bn", 64), ("relu",),
        ("inverse", 64, 32, 2, 1, 0, "down2"), ("bn", 32), ("relu",),
        ("subm", 32, 32, 3, 1, 0, "subm1"), ("bn", 32), ("relu",),
        ("inverse", 32, 16, 2, 1, 0, "down1"), ("bn", 16), ("relu",),
        ("subm", 16, 8, 1, 1, 0, None)]
BACKBONES = {"middle": (MIDDLE, (1600, 1600, 40)), "unet": (UNET, (400, 400, 40))}


# ---------------------------------------------------------------- spconv side (its own venv)

def spconv_net(spec, seed: int = 0):
    import spconv.pytorch as sp
    import torch
    from spconv.core import ConvAlgo
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = []
    for item in spec:
        if item[0] == "bn":
            bn = torch.nn.BatchNorm1d(item[1])
            with torch.no_grad():
                for t, lo, hi in ((bn.weight, 0.5, 1.5), (bn.bias, -0.2, 0.2),
                                  (bn.running_mean, -0.2, 0.2), (bn.running_var, 0.5, 1.5)):
                    t.copy_(torch.from_numpy(rng.uniform(lo, hi, item[1]).astype(np.float32)))
            layers.append(bn.eval())
        elif item[0] == "relu":
            layers.append(torch.nn.ReLU())
        else:
            kind, cin, cout, k, s, p, key = item
            common = {"bias": False, "indice_key": key, "algo": ConvAlgo.Native}
            if kind == "subm":
                conv = sp.SubMConv3d(cin, cout, k, **common)
            elif kind == "conv":
                conv = sp.SparseConv3d(cin, cout, k, s, padding=p, **common)
            else:
                conv = sp.SparseInverseConv3d(cin, cout, k, **common)
            bound = np.sqrt(6 / (cin * k ** 3))     # He-uniform: activations stay O(1)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(rng.uniform(-bound, bound, tuple(
                    conv.weight.shape)).astype(np.float32)))
            layers.append(conv)
    return sp.SparseSequential(*layers)


def spconv_worker(name: str, data: str, out: str, rounds: int) -> None:
    """Under spconv's python: build the net, save it as our converter reads it, time its
    forward (rulebooks included: spconv builds them in every forward) and save its outputs."""
    import torch
    from convrewrite.sparse.spconv_import import describe, save_layers, spconv_forward
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    spec, grid = BACKBONES[name]
    net = spconv_net(spec)
    d = np.load(data)
    coords, features = d["coords"], d["features"]
    y, idx = spconv_forward(net, features, coords, grid, 1)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        spconv_forward(net, features, coords, grid, 1)
        samples.append(time.perf_counter() - start)
    save_layers(describe(net), out, out_features=y, out_coordinates=idx,
                forward=np.asarray(samples), threads=np.asarray(torch.get_num_threads()))


# ---------------------------------------------------------------- the dense network

def dense_model(layers, grid, cin: int):
    """The same layers as dense convs (ConvTranspose for the inverse ones) on [1, C, *grid], for
    timing: what running the net on the scattered grid costs."""
    import onnx
    from onnx import helper, numpy_helper
    from convrewrite.sparse.spconv_import import _onnx_weight
    nodes, inits, x = [], [], "x"
    for i, layer in enumerate(layers):
        y = f"t{i}"
        if layer.kind in ("subm", "conv", "inverse"):
            a = layer.attrs
            w = _onnx_weight(layer)
            if layer.kind == "inverse":
                forward = next(p for p in layers[:i] if p.kind == "conv"
                               and p.attrs["indice_key"] == a["indice_key"]).attrs
                inits.append(numpy_helper.from_array(np.ascontiguousarray(w.transpose(1, 0, 2, 3,
                                                                                      4)), y + "w"))
                nodes.append(helper.make_node("ConvTranspose", [x, y + "w"], [y],
                                              strides=forward["stride"],
                                              pads=forward["padding"] * 2))
            else:
                pad = [k // 2 for k in a["kernel"]] if layer.kind == "subm" else a["padding"]
                inits.append(numpy_helper.from_array(w, y + "w"))
                nodes.append(helper.make_node("Conv", [x, y + "w"], [y], pads=pad * 2,
                                              strides=a["stride"] if layer.kind == "conv"
                                              else [1, 1, 1]))
        elif layer.kind == "batchnorm":
            names = [y + k for k in ("s", "b", "m", "v")]
            for n, k in zip(names, ("scale", "bias", "mean", "var")):
                inits.append(numpy_helper.from_array(layer.weights[k], n))
            nodes.append(helper.make_node("BatchNormalization", [x, *names], [y]))
        else:
            nodes.append(helper.make_node(layer.kind, [x], [y]))
        x = y
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, [1, cin, *grid])],
        [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def dense_fits(layers, grid) -> bool:
    widest = max([layer.weights["weight"].shape[0] for layer in layers if "weight" in
                  layer.weights] + [4])
    need = 3 * int(np.prod(grid)) * widest * 4
    return need < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 3


# ---------------------------------------------------------------- one backbone

def bench(name: str, args, spconv: str | None, tmp: Path) -> dict:
    from convrewrite.pipeline import rewrite_model
    from convrewrite.sparse.spconv_import import keyed_difference, load_layers, to_onnx
    from convrewrite.target import load_target
    spec, grid = BACKBONES[name]
    coords = lidar_like(0, grid)
    features = np.random.default_rng(1).uniform(-1, 1, (len(coords), 4)).astype(np.float32)
    density = len(coords) / np.prod(grid)
    print(f"\n== {name}: {len(coords)} voxels in {'x'.join(map(str, grid))} ({density:.3%})")
    data, out = tmp / f"{name}_data.npz", tmp / f"{name}_spconv.npz"
    np.savez(data, coords=coords, features=features)
    if spconv is None:
        print("  spconv absent: cannot build the net (its weights come from spconv's modules)")
        return {}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([spconv, __file__, "--spconv-worker", name, str(data), str(out),
                           str(args.rounds)], capture_output=True, text=True, env=env,
                          timeout=3600)
    if proc.returncode != 0:
        print(f"  spconv failed: {proc.stderr.strip().splitlines()[-1:]}")
        return {}
    layers, sp = load_layers(out)
    t_spconv = float(np.median(sp["forward"]))
    target = load_target({"name": "host"})
    graph_model = rewrite_model(to_onnx(layers, grid, 4), target)[0]
    const_model = rewrite_model(to_onnx(layers, grid, 4, coords=coords), target)[0]
    s_graph, s_const, s_const2 = (ort_session(graph_model), ort_session(const_model),
                                  ort_session(const_model))
    feeds = {"features": features, "coordinates": coords}
    fcon = {"features": features}
    contenders = {"onnxruntime, precomputed rulebooks": lambda: s_const.run(None, fcon),
                  "onnxruntime, control (a copy)": lambda: s_const2.run(None, fcon),
                  "onnxruntime, in-graph rulebooks": lambda: s_graph.run(None, feeds)}
    results = {}
    for label, session, f in (("in-graph", s_graph, feeds), ("precomputed", s_const, fcon)):
        got = session.run(None, f)
        err = keyed_difference(got[1], got[0], sp["out_coordinates"], sp["out_features"])
        two = ort_session(graph_model if label == "in-graph" else const_model, 2).run(None, f)
        results[label] = (err, all(np.array_equal(a, b) for a, b in zip(got, two)))
    tvm = None
    try:
        import tvm as _tvm  # noqa: F401
        from convrewrite.sparse.tvm_model import SparseTvmModel
        tvm = SparseTvmModel(to_onnx(layers, grid, 4)).build()
    except ImportError:
        print("  TVM absent: no TVM column")
    if tvm is not None:
        import tvm as tvm_pkg
        config = tvm_pkg.get_global_func("runtime.config_threadpool")
        config(0, 1)
        contenders["TVM build, rulebooks + kernels"] = lambda: tvm.run(feeds)
        contenders["TVM build, control (the same)"] = lambda: tvm.run(feeds)
        args_ready, _ = tvm.arguments(feeds)
        from convrewrite.tvm.run import run_executable
        contenders["TVM build, kernels only"] = lambda: run_executable(tvm.executable, "llvm",
                                                                       args_ready)
        contenders["TVM host rulebooks only"] = lambda: tvm.arguments(feeds)
        one = tvm.run(feeds)
        config(0, 2)
        two = tvm.run(feeds)
        config(0, 1)
        err = keyed_difference(one["out_coordinates"], one["out_features"],
                               sp["out_coordinates"], sp["out_features"])
        results["tvm"] = (err, all(np.array_equal(one[k], two[k]) for k in one))
    times = dict(zip(contenders, time_callables(list(contenders.values()), args.rounds, 1)))
    dense = None
    if dense_fits(layers, grid):
        d_session = ort_session(dense_model(layers, grid, 4))
        last = np.zeros((*grid, 4), np.float32)
        last[tuple(coords[:, 1:].T)] = features
        x = np.ascontiguousarray(np.moveaxis(last, -1, 0)[None])
        dense = time_callables([lambda: d_session.run(None, {"x": x})], 2, 1)[0]
    print(f"  spconv forward (rulebooks included, 1 thread) {ms(t_spconv)}")
    for label, t in times.items():
        print(f"  {label:38s} {ms(t)}   {ratio(t, t_spconv)} spconv's time")
    print(f"  dense network on the whole grid (onnxruntime, 1 thread) "
          f"{ms(dense) if dense is not None else 'does not fit in memory'}")
    ctl_ort = times["onnxruntime, control (a copy)"] / times["onnxruntime, precomputed rulebooks"]
    ctl_tvm = times["TVM build, control (the same)"] / times["TVM build, rulebooks + kernels"] \
        if tvm is not None else None
    print(f"  control: onnxruntime copy/original {ctl_ort:.2f}"
          + (f", TVM same/same {ctl_tvm:.2f}" if ctl_tvm is not None else "")
          + " (a ratio counts only where its control reads 1.00 +- 0.02)")
    scale = float(np.abs(sp["out_features"]).max())
    for label, (err, same) in results.items():
        print(f"  {label}: max |diff| to spconv keyed by coordinate {err:.2e} (outputs up to "
              f"{scale:.2e}); 1 vs 2 threads bit-identical: {same}")
    summary = {"backbone": name, "voxels": len(coords), "density": density,
               "spconv_forward": t_spconv, "dense": dense, **times,
               "checks": {k: {"max_err": e, "threads_identical": s} for k, (e, s) in
                          results.items()}}
    if tvm is not None:
        e2e = times["TVM build, rulebooks + kernels"]
        print(f"  GOALS: TVM speed / spconv's {t_spconv / e2e:.2f}x (goal >= 1.0); onnxruntime "
              f"precomputed {times['onnxruntime, precomputed rulebooks'] / t_spconv:.2f}x "
              f"spconv's time (goal <= 1.0), in-graph "
              f"{times['onnxruntime, in-graph rulebooks'] / t_spconv:.2f}x (goal <= 1.5)"
              + (f"; dense / TVM {dense / e2e:.1f}x (goal >= 20 at <= 2% density)"
                 if dense is not None else ""))
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", choices=sorted(BACKBONES))
    p.add_argument("--spconv-python")
    p.add_argument("--json")
    p.add_argument("--spconv-worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.spconv_worker:
        name, data, out, rounds = args.spconv_worker
        return spconv_worker(name, data, out, int(rounds))
    spconv = find_spconv(args.spconv_python)
    names = [args.only] if args.only else list(BACKBONES)
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench(n, args, spconv, Path(tmp)) for n in names]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
