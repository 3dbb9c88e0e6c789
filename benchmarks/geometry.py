"""What the geometry lowerings cost on onnxruntime CPU, side by side in one run.

- ConvTranspose (DCGAN / U-Net layers): the sub-pixel form vs zero insertion vs the original.
- A dilated 3x3 conv (DeepLab rates 2, 6, 12): space-to-batch vs the dense zero-filled kernel
  (forced by a batch limit) vs the original.
- A 7x7 conv split into 3x3 pieces (+ the K210's fixed padding) vs the original.
Each row prints MACs and latency as ratios over the original, next to a control (the original
against a copy of itself). Timing as shared/FACTS.md says: spinning off, order rotated.

Run: python benchmarks/geometry.py [--rounds 30]          (not a test)
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx

import convrewrite as cr
from convrewrite.gs_graph import to_graph
from convrewrite.models.builder import GraphBuilder
from convrewrite.build.onnx_read import spec_of
from convrewrite.build.onnx_read import conv_nodes
from timing import copy_of, time_side_by_side


def single(op_builder, channels: int, size: int) -> onnx.ModelProto:
    g = GraphBuilder("bench", seed=0)
    x = g.input("x", channels, (size, size), 1)
    g.output(op_builder(g, x), "y")
    return g.build()


def total_macs(model: onnx.ModelProto) -> int:
    specs = [spec_of(n) for n in conv_nodes(to_graph(model))]
    return sum(s.macs for s in specs)


def macs(model: onnx.ModelProto, target) -> tuple[onnx.ModelProto, float]:
    out, report = cr.rewrite(model, target, verify=True)
    assert report.status == "ok" and not report.mismatches, report.render()
    return out, total_macs(out) / total_macs(model)


def row(label: str, model, variants: list[tuple[str, dict]], rounds: int) -> None:
    feeds = {"x": np.random.default_rng(0).uniform(-1, 1, [
        d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)}
    built = [(name, *macs(model, target)) for name, target in variants]
    times = time_side_by_side([model, copy_of(model), *[m for _, m, _ in built]], feeds, rounds)
    base = times[0]
    parts = [f"control {times[1] / base:.3f}x"]
    for (name, _, mac_ratio), t in zip(built, times[2:]):
        parts.append(f"{name}: MACs {mac_ratio:.2f}x latency {t / base:.2f}x")
    print(f"{label:38s} original {base * 1e3:6.2f} ms | " + " | ".join(parts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    no_deconv = {"name": "no-deconv", "conv": {"transposed": False}}
    forms = [("sub-pixel", {**no_deconv, "rewrite": {"transposed_form": "subpixel"}}),
             ("zero insertion", {**no_deconv, "rewrite": {"transposed_form": "zero_insertion"}})]
    print("ConvTranspose lowered (ratios over onnxruntime's own ConvTranspose)")
    for cin, cout, size, k, p in [(256, 128, 8, 4, 1), (128, 64, 16, 4, 1), (64, 32, 32, 4, 1),
                                  (128, 64, 32, 2, 0)]:
        model = single(lambda g, x: g.conv_transpose(x, cout, k, 2, p), cin, size)
        row(f"  {cin}->{cout} k{k} s2 on {size}x{size}", model, forms, args.rounds)
    print("Dilated 3x3 conv, 64->64 on 64x64: space-to-batch vs a dense zero-filled kernel")
    for rate in (2, 6, 12):
        model = single(lambda g, x: g.conv(x, 64, 3, dilation=rate), 64, 64)
        row(f"  dilation {rate}", model,
            [("chosen by cost", {"name": "nodil", "conv": {"max_dilation": 1}}),
             ("dense", {"name": "nodil-b1", "conv": {"max_dilation": 1, "max_batch": 1}})],
            args.rounds)
    print("7x7 conv split into 3x3 pieces")
    for cin, cout, size, stride in [(3, 64, 112, 1), (64, 64, 56, 1)]:
        model = single(lambda g, x: g.conv(x, cout, 7, stride), cin, size)
        row(f"  {cin}->{cout} on {size}x{size}", model,
            [("3x3 pieces", {"name": "k3", "conv": {"max_kernel": 3}}),
             ("k210 (3x3 + fixed pad)", "k210")], args.rounds)


if __name__ == "__main__":
    main()
