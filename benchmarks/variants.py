"""What the conv-variant lowerings cost on onnxruntime CPU, side by side in one run.

1. Shift (ShiftResNet block: 1x1 -> shift -> 1x1): the shift as a one-hot depthwise conv vs our
   Slice/Pad form, the shift alone and the whole block (goal: ours >= 1.5x faster).
2. Grouped convs on a dense-only engine: per-group convs vs one block-diagonal conv over a sweep
   of shapes, with MACs, latency, and whether the cost model picked the faster (goal: >= 90%).
3. ShuffleNetV2 (x0.5, 224x224, TorchScript-style run-time shapes) with its shuffles folded vs
   all Gathers vs the original 5-D Reshape/Transpose (goal: folded <= 1.0x the original).
Every table has a control: the reference against a copy of itself. Timing as shared/FACTS.md
says: spinning off, order rotated every round, medians.

Run: python benchmarks/variants.py [--rounds 30] [--quick]          (not a test)
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convrewrite.conv import ConvSpec
from convrewrite.gs_graph import from_graph, to_graph
from convrewrite.models.variants import shufflenet_v2
from convrewrite.ops.shift import one_hot_depthwise_weight, shift_offsets
from convrewrite.lowerings.groups import GroupLowering
from convrewrite.passes.shuffle import ShuffleRemoval
from convrewrite.pipeline import rewrite_model, run_passes
from convrewrite.plan.channels import plan_group_lowering
from convrewrite.target import load_target
from convrewrite.verify import run
from timing import copy_of, time_side_by_side


def feeds_for(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {model.graph.input[0].name: np.random.default_rng(0).uniform(-1, 1, dims)
            .astype(np.float32)}


def same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, feeds, atol=1e-4) -> None:
    ra, rb = run(a, feeds), run(b, feeds)
    for name, value in ra.items():
        np.testing.assert_allclose(rb[name], value, atol=atol * max(1.0, float(np.abs(value).max())))


def single_model(nodes, inits: dict, x_shape) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", 1, x_shape)],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# ------------------------------------------------------------------ 1. shift

def shift_block(channels: int, expansion: int, size: int, whole: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    wide = channels * expansion
    offsets = shift_offsets(wide, 3)
    inits = {"S": one_hot_depthwise_weight(offsets, 3, 1)}
    nodes = [helper.make_node("Conv", ["x" if not whole else "e", "S"], ["s"], group=wide,
                              kernel_shape=[3, 3], pads=[1] * 4, name="shift")]
    if whole:
        inits["E"] = (rng.standard_normal((wide, channels, 1, 1)) / channels ** .5).astype("f4")
        inits["R"] = (rng.standard_normal((channels, wide, 1, 1)) / wide ** .5).astype("f4")
        nodes = [helper.make_node("Conv", ["x", "E"], ["e0"], kernel_shape=[1, 1], name="expand"),
                 helper.make_node("Relu", ["e0"], ["e"], name="relu")] + nodes + \
                [helper.make_node("Conv", ["s", "R"], ["y"], kernel_shape=[1, 1], name="reduce")]
        return single_model(nodes, inits, [1, channels, size, size])
    nodes[0].output[0] = "y"
    return single_model(nodes, inits, [1, wide, size, size])


def shift_table(rounds: int, quick: bool) -> None:
    print("1. shift: one-hot depthwise (as exported) vs our Slice/Pad form")
    slice_pad = load_target({"name": "slice_pad", "rewrite": {"shift_form": "slice_pad"}})
    auto = load_target({"name": "auto"})
    shapes = [(16, 3, 32), (32, 3, 16), (64, 3, 8), (64, 1, 56), (128, 1, 28)]
    for channels, expansion, size in shapes[:3] if quick else shapes:
        for whole in (False, True):
            model = shift_block(channels, expansion, size, whole)
            ours, _ = rewrite_model(model, slice_pad)
            picked, result = rewrite_model(model, auto)
            choice = result.records[0].rewrite.split(" (")[0] if result.records else \
                "kept depthwise"
            feeds = feeds_for(model)
            same_outputs(model, ours, feeds)
            t = time_side_by_side([model, copy_of(model), ours], feeds, rounds)
            what = "block 1x1-shift-1x1" if whole else "shift alone        "
            print(f"  C={channels * expansion:4d} {size:3d}x{size:<3d} {what}: depthwise "
                  f"{t[0] * 1e6:7.0f} us | control {t[1] / t[0]:.3f}x | slice_pad {t[2] * 1e6:7.0f} us"
                  f" -> ours {t[0] / t[2]:.2f}x faster | cost model: {choice}", flush=True)


# ------------------------------------------------------------------ 2. grouped convs

def grouped_model(channels: int, groups: int, size: int, kernel: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((channels, channels // groups, kernel, kernel)) * 0.1).astype("f4")
    return single_model([helper.make_node("Conv", ["x", "W"], ["y"], group=groups,
                                          kernel_shape=[kernel] * 2, pads=[kernel // 2] * 4)],
                        {"W": w}, [1, channels, size, size])


def lowered(model: onnx.ModelProto, target, groups_per_conv: int) -> onnx.ModelProto:
    graph, result = run_passes(to_graph(model), target, model,
                               passes=(GroupLowering(groups_per_conv),), graph_passes=())
    assert result.records and not result.remaining
    return from_graph(graph, model)


def grouped_table(rounds: int, quick: bool) -> None:
    print("2. grouped conv on a dense-only engine: per-group convs vs one block-diagonal conv")
    target = load_target({"name": "dense", "conv": {"groups": ["regular"]}})
    sweep = [(c, g, s, k) for c, s in ((64, 56), (128, 28), (256, 14), (512, 7))
             for g in (2, 4, 8, 32) for k in (1, 3) if c // g >= 1]
    if quick:
        sweep = sweep[::4]
    right = 0
    for channels, groups, size, kernel in sweep:
        model = grouped_model(channels, groups, size, kernel)
        per_group, dense = lowered(model, target, 1), lowered(model, target, groups)
        spec = ConvSpec("c", "Conv", channels, channels, groups, (kernel, kernel), (1, 1), (1, 1),
                        (kernel // 2,) * 4, input_shape=(1, channels, size, size),
                        output_shape=(1, channels, size, size))
        plan = plan_group_lowering(spec, target)
        per_conv = len(plan.blocks) and groups // len(plan.blocks)
        picked_model = lowered(model, target, per_conv)
        feeds = feeds_for(model)
        same_outputs(model, dense, feeds)
        t = time_side_by_side([per_group, copy_of(per_group), dense, picked_model], feeds, rounds)
        picked = "per-group" if per_conv == 1 else ("block-diagonal" if per_conv == groups
                                                     else f"{per_conv} groups/conv")
        # right: the pick is no slower than the better extreme, within the control's noise
        noise = abs(t[1] / t[0] - 1) + 0.05
        best = min(t[0], t[2])
        ok = t[3] <= best * (1 + noise)
        right += ok
        print(f"  C={channels:3d} G={groups:2d} {size:2d}x{size:<2d} k={kernel}: MACs block-diagonal "
              f"{groups}x per-group | per-group {t[0] * 1e6:6.0f} us, control {t[1] / t[0]:.3f}x, "
              f"block-diagonal {t[2] / t[0]:.2f}x | picked {picked:16s} {t[3] / best:.2f}x the "
              f"faster extreme {'ok' if ok else 'WRONG'}", flush=True)
    print(f"  cost model right on {right}/{len(sweep)} = {right / len(sweep):.0%} of the sweep "
          f"(goal >= 90%)")


# ------------------------------------------------------------------ 3. ShuffleNetV2

def shuffle_table(rounds: int, quick: bool) -> None:
    print("3. ShuffleNetV2 x0.5 (TorchScript-style run-time shapes): shuffles folded vs Gather")
    size = 112 if quick else 224
    model = shufflenet_v2(image_size=size, shuffle="dynamic")
    target = load_target({"name": "4d", "max_tensor_rank": 4})
    folded, _ = rewrite_model(model, target)
    graph, _ = run_passes(to_graph(model), target, model,
                          graph_passes=(ShuffleRemoval(never_fold=True),))
    gathered = from_graph(graph, model)
    feeds = feeds_for(model)
    same_outputs(model, folded, feeds)
    same_outputs(model, gathered, feeds)
    count = {name: sum(n.op_type == op for n in m.graph.node)
             for name, m, op in (("transposes", model, "Transpose"),
                                 ("gathers folded", folded, "Gather"),
                                 ("gathers all", gathered, "Gather"))}
    t = time_side_by_side([model, copy_of(model), folded, gathered], feeds, rounds)
    print(f"  {size}x{size}: original {t[0] * 1e3:.2f} ms ({count['transposes']} 5-D transposes) |"
          f" control {t[1] / t[0]:.3f}x | folded {t[2] / t[0]:.3f}x ({count['gathers folded']} "
          f"Gathers left) | all Gather {t[3] / t[0]:.3f}x ({count['gathers all']} Gathers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="fewer shapes, smaller maps")
    args = parser.parse_args()
    shift_table(args.rounds, args.quick)
    grouped_table(args.rounds, args.quick)
    shuffle_table(args.rounds, args.quick)


if __name__ == "__main__":
    main()
