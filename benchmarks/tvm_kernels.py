"""TVM with our schedules against onnxruntime (MLAS) on this CPU, side by side in one run.

    python benchmarks/tvm_kernels.py [--target k210] [--rounds 25] [--quick] [--only-shift]

1. every distinct conv shape of ResNet-50 rewritten for the target (convrewrite/models/resnet.py),
   each as a one-conv model: TVM (import into Relax, our conv-as-GEMM kernel and schedule) vs
   onnxruntime, with onnxruntime against a copy of itself as the control; speed ratio
   = onnxruntime time / TVM time (goal ≥ 0.7), and their geometric mean;
2. the whole rewritten model, the same way;
3. the fused shift + 1×1 conv kernel (convrewrite/tvm/kernels/shift_conv.py: no padded copy, borders
   handled in the loads) vs a plain 1×1 conv of the same size in our conv kernel (goal ≤ 1.1×
   its time), with the plain conv against a second build of itself as the control, and vs
   shift-then-1×1 unfused (our shift kernel, then the same 1×1 kernel);
4. a whole ShiftResNet (2 blocks, 64 -> 192 -> 64 channels, 56×56, shifts as one-hot depthwise
   convs): TVM with the shifts fused (bias, shortcut add and ReLU in the kernel's write-back) vs
   TVM on the same net with the shifts deleted (the floor: what the 1×1 convs cost alone), vs
   onnxruntime on the net, each with a second build of itself as the control.

Timing as shared/FACTS.md says: onnxruntime's and TVM's thread-pool spinning off, every
contender run in turn with the order rotated each round, medians, both on all cores (2 here).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# TVM's worker threads spin after each parallel region, like onnxruntime's: whoever runs next
# loses its cores (measured: onnxruntime against its own copy read 1.5-2.0x with TVM's spinning
# on). Both pools are told not to spin (before TVM's pool starts).
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import copy_of, session, time_callables as alternate  # noqa: E402

import convrewrite as cr  # noqa: E402
from convrewrite.models import resnet50  # noqa: E402
from convrewrite.tvm import require_tvm  # noqa: E402
from convrewrite.tvm.build import build, import_onnx  # noqa: E402
from convrewrite.ops.shift import shift_offsets, shift_reference  # noqa: E402
from convrewrite.tvm.kernels.conv_gemm import (ConvGeometry, conv_prim_func, pack_weight,
                                               schedule_conv)
from convrewrite.tvm.kernels.shift_conv import (offsets_table, shift_conv_geometry,
                                                shift_conv_prim_func, shift_prim_func, shift_tables)
from convrewrite.tvm.machines import cpu_target  # noqa: E402
from convrewrite.verify import make_inputs  # noqa: E402


def tvm_callable(model: onnx.ModelProto, feeds: dict[str, np.ndarray]):
    """Build ``model`` with our schedules; returns (call, outputs of one call)."""
    tvm = require_tvm()
    from tvm import relax
    executable = build(import_onnx(model, feeds), "llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    main = vm["main"]
    args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input
            if i.name in feeds]
    return (lambda: main(*args)), main(*args)


def ort_callable(model: onnx.ModelProto, feeds: dict[str, np.ndarray]):
    sess = session(model)
    return lambda: sess.run(None, feeds)


def conv_shapes(model: onnx.ModelProto) -> Counter:
    """(input shape, weight shape, strides, pads, dilations, group) of every conv, counted."""
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in [*model.graph.value_info, *model.graph.input]}
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    found: Counter = Counter()
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        rank = len(weights[node.input[1]]) - 2
        found[(shapes[node.input[0]], weights[node.input[1]],
               tuple(a.get("strides", [1] * rank)), tuple(a.get("pads", [0] * 2 * rank)),
               tuple(a.get("dilations", [1] * rank)), a.get("group", 1))] += 1
    return found


def one_conv(x_shape, w_shape, strides, pads, dilations, group, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(w_shape) / math.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=list(strides), pads=list(pads),
                            dilations=list(dilations), group=group)
    graph = helper.make_graph([node], "conv",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def check_close(a: np.ndarray, b: np.ndarray, what: str) -> None:
    scale = max(1.0, float(np.abs(b).max()))
    if not np.allclose(a, b, atol=1e-4 * scale, rtol=1e-3):
        raise SystemExit(f"{what}: TVM and onnxruntime disagree (max abs "
                         f"{float(np.abs(a - b).max()):.3g})")


def bench_model(model: onnx.ModelProto, rounds: int, what: str) -> tuple[float, float, float]:
    """(onnxruntime s, onnxruntime-copy s, TVM s)."""
    feeds = make_inputs(model, seed=0)
    tvm_run, tvm_out = tvm_callable(model, feeds)
    ort_run = ort_callable(model, feeds)
    check_close(tvm_out.numpy() if hasattr(tvm_out, "numpy") else tvm_out[0].numpy(),
                ort_run()[0], what)
    t_ort, t_copy, t_tvm = alternate([ort_run, ort_callable(copy_of(model), feeds), tvm_run],
                                     rounds)
    return t_ort, t_copy, t_tvm


def describe(key) -> str:
    x, w, strides, pads, dilations, group = key
    k = "x".join(map(str, w[2:]))
    s = "" if set(strides) == {1} else f" s{strides[0]}"
    return f"{w[1]:>5}->{w[0]:<5} k{k}{s} {x[2]}x{x[3]}"


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="k210", help="rewrite ResNet-50 for this target first")
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--quick", action="store_true", help="a few shapes only (a smoke run)")
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--skip-shift", action="store_true")
    p.add_argument("--only-shift", action="store_true", help="the shift + 1x1 rows only")
    args = p.parse_args(argv)
    require_tvm()
    if args.only_shift:
        shift_rows(max(args.rounds, 40))
        shift_model_rows(max(args.rounds, 40))
        return 0

    model, report = cr.rewrite(resnet50(), args.target, verify=False)
    shapes = conv_shapes(model)
    keys = sorted(shapes, key=lambda k: (k[0][2], k[1][1], k[1][0]))
    if args.quick:
        keys = keys[:: max(1, len(keys) // 4)]
    print(f"ResNet-50 rewritten for {args.target}: {sum(shapes.values())} convs, "
          f"{len(shapes)} distinct shapes; times are medians of {args.rounds} interleaved runs")
    print(f"{'conv':32s} {'n':>3s} {'GFLOP':>6s} {'ort ms':>8s} {'tvm ms':>8s} {'tvm GF/s':>8s} "
          f"{'speed tvm/ort':>13s} {'control ort/ort':>15s}")
    ratios, controls = [], []
    # the first measurement of a process reads low for TVM (its thread pool and allocator warm
    # up): one shape is timed once, unreported
    bench_model(one_conv(*keys[0]), args.rounds, describe(keys[0]))
    for key in keys:
        x, w, strides, pads, dilations, _ = key
        geom = ConvGeometry(x[0], x[1], x[2], x[3], w[0], w[2:], strides, dilations,
                            (pads[0], pads[1], pads[2], pads[3]))
        flops = 2 * geom.macs / 1e9
        conv = one_conv(*key)
        t_ort, t_copy, t_tvm = bench_model(conv, args.rounds, describe(key))
        ratio, control = t_ort / t_tvm, t_ort / t_copy
        ratios.append(ratio)
        controls.append(control)
        print(f"{describe(key):32s} {shapes[key]:>3d} {flops:6.3f} {t_ort * 1e3:8.3f} "
              f"{t_tvm * 1e3:8.3f} {flops / t_tvm:8.0f} {ratio:13.2f} {control:15.2f}")
    print(f"per-conv speed, geometric mean over {len(ratios)} shapes: TVM/onnxruntime "
          f"{geomean(ratios):.2f} (goal >= 0.70; control {geomean(controls):.2f}); "
          f"min {min(ratios):.2f}, {sum(r >= 0.7 for r in ratios)}/{len(ratios)} shapes >= 0.70")

    if not args.skip_model:
        t_ort, t_copy, t_tvm = bench_model(model, max(10, args.rounds // 2), "whole model")
        print(f"whole rewritten ResNet-50: onnxruntime {t_ort * 1e3:.1f} ms, TVM "
              f"{t_tvm * 1e3:.1f} ms: speed TVM/onnxruntime {t_ort / t_tvm:.2f} "
              f"(control ort/ort {t_ort / t_copy:.2f})")

    if not args.skip_shift:
        shift_rows(max(args.rounds, 40))
        shift_model_rows(max(args.rounds, 40))
    return 0


SHIFT_SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))     # ShiftNet/ResNet stage widths


def compiled(func):
    tvm = require_tvm()
    from tvm.s_tir import Schedule
    sch = Schedule(func)
    schedule_conv(sch)
    return tvm.compile(sch.mod, target=cpu_target())["main"]


def shift_rows(rounds: int) -> None:
    """Fused shift + 1x1 vs a plain 1x1 of the same size (and a second build of the plain 1x1,
    the control) vs shift, then 1x1 (unfused)."""
    tvm = require_tvm()
    print(f"shift (3x3 directions) + 1x1 conv, C -> C channels; medians of {rounds} interleaved runs")
    print(f"{'shape':10s} {'plain 1x1 ms':>12s} {'fused ms':>9s} {'unfused ms':>10s} "
          f"{'fused/plain':>11s} {'control plain/plain':>19s} {'unfused/fused':>13s}")
    fused_ratios, controls = [], []
    for channels, size in SHIFT_SHAPES:
        geom = shift_conv_geometry(1, channels, size, size, channels)
        offsets = shift_offsets(channels)
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (1, channels, size, size)).astype(np.float32)
        w = rng.uniform(-1, 1, (channels, channels, 1, 1)).astype(np.float32)
        fused_func, tile = shift_conv_prim_func(geom, offsets)
        fused = tvm.compile(fused_func, target=cpu_target())["main"]
        plain = compiled(conv_prim_func(geom, tile))
        control = compiled(conv_prim_func(geom, tile))
        shift = tvm.compile(shift_prim_func(x.shape), target=cpu_target())["main"]
        flat, runs = shift_tables(offsets, size)
        t = {k: tvm.runtime.tensor(v) for k, v in (
            ("x", x), ("off", offsets_table(offsets)), ("flat", flat), ("runs", runs),
            ("w", pack_weight(w, tile)), ("y", np.zeros_like(x)), ("z", np.zeros_like(x)),
            ("z2", np.zeros_like(x)), ("z3", np.zeros_like(x)))}
        fused(t["x"], t["flat"], t["runs"], t["w"], t["z"])
        reference = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], shift_reference(x, offsets))
        check_close(t["z"].numpy(), reference, f"fused shift {channels}x{size}")

        def unfused():
            shift(t["x"], t["off"], t["y"])
            plain(t["y"], t["w"], t["z2"])

        t_plain, t_fused, t_control, t_unfused = alternate(
            [lambda: plain(t["x"], t["w"], t["z2"]),
             lambda: fused(t["x"], t["flat"], t["runs"], t["w"], t["z"]),
             lambda: control(t["x"], t["w"], t["z3"]), unfused], rounds)
        fused_ratios.append(t_fused / t_plain)
        controls.append(t_control / t_plain)
        print(f"{channels:>4d}x{size:<5d} {t_plain * 1e3:12.3f} {t_fused * 1e3:9.3f} "
              f"{t_unfused * 1e3:10.3f} {t_fused / t_plain:11.2f} {t_control / t_plain:19.2f} "
              f"{t_unfused / t_fused:13.2f}")
    print(f"fused shift + 1x1 costs {geomean(fused_ratios):.2f}x a plain 1x1 (geometric mean; "
          f"goal <= 1.10; worst {max(fused_ratios):.2f}x; control {geomean(controls):.2f})")


def without_shifts(model: onnx.ModelProto) -> onnx.ModelProto:
    """The net with every depthwise (shift) conv deleted: its readers read its input."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    shifts = [n for n in out.graph.node if n.op_type == "Conv"
              and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    for node in shifts:
        for reader in out.graph.node:
            for i, name in enumerate(reader.input):
                if name == node.output[0]:
                    reader.input[i] = node.input[0]
        out.graph.node.remove(node)
    return out


def shift_model_rows(rounds: int) -> None:
    from convrewrite.models.variants import shift_resnet
    from convrewrite.tvm.shift_fusion import shift_pairs
    model = shift_resnet(size=56, channels=64, form="depthwise")
    floor = without_shifts(model)
    feeds = make_inputs(model, seed=0)
    assert shift_pairs(import_onnx(model, feeds)) == 2
    fused_run, fused_out = tvm_callable(model, feeds)
    control_run, _ = tvm_callable(model, feeds)
    floor_run, _ = tvm_callable(floor, feeds)
    ort_run = ort_callable(model, feeds)
    check_close(fused_out.numpy(), ort_run()[0], "fused ShiftResNet")
    t_fused, t_control, t_floor, t_ort, t_ort_copy = alternate(
        [fused_run, control_run, floor_run, ort_run, ort_callable(copy_of(model), feeds)],
        rounds)
    print(f"ShiftResNet 2 blocks 64->192->64 at 56x56 (shifts fused, epilogue folded): TVM "
          f"{t_fused * 1e3:.2f} ms, TVM without the shifts {t_floor * 1e3:.2f} ms, onnxruntime "
          f"{t_ort * 1e3:.2f} ms")
    print(f"  shifts' cost in the whole net: fused/no-shift {t_fused / t_floor:.2f}x, with a "
          f"second build of the fused net {t_control / t_floor:.2f}x (control fused/fused "
          f"{t_control / t_fused:.2f}); speed TVM/onnxruntime {t_ort / t_fused:.2f} "
          f"(control ort/ort {t_ort / t_ort_copy:.2f})")


if __name__ == "__main__":
    sys.exit(main())
