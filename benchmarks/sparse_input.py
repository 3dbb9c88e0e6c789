"""A dense conv net run on mostly-zero inputs, rewritten with ``--sparse-input`` (one sparse
region, densified at the output) against the dense original, on onnxruntime, one thread, side by
side with a control (the original against a copy of itself).

Nets: 2-D 16 -> 32 -> 32 on 128x128 (3x3, bias, ReLU: the second conv reads a non-zero
background, so it runs over a background map), and 3-D 4 -> 16 -> 16 on 64x64x32; inputs with
0.5%, 2% and 10% of the sites active; then the masked-image net (submanifold convs) with its
mask named. The rewritten model's rulebooks are built in the graph (the sites arrive with the
input). Regular convs dilate random sites fast (a 3x3x3 conv takes 2% of the sites to ~42%),
so the stacks of regular convs measure the cost of that, the masked net the submanifold case.

Run: python benchmarks/sparse_input.py [--rounds 20]        (not a test; ~1 min idle)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import copy_of, session, time_callables  # noqa: E402

NETS = {"2-D 16-32-32 on 128x128": (16, [32, 32], (128, 128)),
        "3-D 4-16-16 on 64x64x32": (4, [16, 16], (64, 64, 32))}


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


def masked_net_case(rounds: int) -> None:
    """The masked-image net (submanifold convs: the sites stay the mask's), 128x128, mask named."""
    from convrewrite.models.sparse_nets import masked_conv_net, random_mask
    from convrewrite.pipeline import rewrite_model
    from convrewrite.target import load_target
    model = masked_conv_net(image_size=128, in_channels=16, width=32)
    rewritten, _ = rewrite_model(model, load_target({"name": "host"}), sparse_inputs=["mask"])
    print("\n== masked-image net 16-32 (SubM, SubM, strided, 1x1) on 128x128, --sparse-input mask")
    dense, twin, sparse = session(model, 1), session(copy_of(model), 1), session(rewritten, 1)
    rng = np.random.default_rng(2)
    for density in (0.005, 0.02, 0.1):
        x = {"image": rng.uniform(-1, 1, (1, 16, 128, 128)).astype(np.float32),
             "mask": random_mask(128, density, seed=3)}
        t_dense, t_twin, t_sparse = time_callables(
            [lambda: dense.run(None, x), lambda: twin.run(None, x), lambda: sparse.run(None, x)],
            rounds)
        err = float(np.abs(sparse.run(None, x)[0] - dense.run(None, x)[0]).max())
        print(f"  {density:5.1%} visible: dense {t_dense * 1e3:7.2f} ms (control "
              f"{t_twin / t_dense:.2f}), sparse region {t_sparse * 1e3:7.2f} ms = "
              f"{t_sparse / t_dense:.2f}x the dense time; max |diff| {err:.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    from convrewrite.pipeline import rewrite_model
    from convrewrite.target import load_target
    for label, (cin, widths, grid) in NETS.items():
        model = dense_net(cin, widths, grid)
        rewritten, result = rewrite_model(model, load_target({"name": "host"}),
                                          sparse_inputs=["x"])
        print(f"\n== {label}: {result.records[0].rewrite[:140]}...")
        dense, twin, sparse = session(model, 1), session(copy_of(model), 1), session(rewritten, 1)
        rng = np.random.default_rng(1)
        for density in (0.005, 0.02, 0.1):
            keep = rng.random((1, 1, *grid)) < density
            x = {"x": (rng.uniform(-1, 1, (1, cin, *grid)) * keep).astype(np.float32)}
            t_dense, t_twin, t_sparse = time_callables(
                [lambda: dense.run(None, x), lambda: twin.run(None, x),
                 lambda: sparse.run(None, x)], args.rounds)
            err = float(np.abs(sparse.run(None, x)[0] - dense.run(None, x)[0]).max())
            print(f"  {density:5.1%} active: dense {t_dense * 1e3:7.2f} ms (control "
                  f"{t_twin / t_dense:.2f}), sparse region {t_sparse * 1e3:7.2f} ms = "
                  f"{t_sparse / t_dense:.2f}x the dense time (goal <= 0.25 at <= 2%); max |diff| "
                  f"{err:.1e}")
    masked_net_case(args.rounds)


if __name__ == "__main__":
    main()
