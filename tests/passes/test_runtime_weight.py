"""Every conv lowering on a weight that is not a constant initializer (issue 14): the weight a
graph input, or Identity(initializer). Through the Python API and the command line (a real
subprocess): never exit 4; a rewrite matches the original on onnxruntime, fed the same weight;
a conv left illegal is exit 3 with the reason in the report. One case per lowering, on the
preset (or a small target of its own) that triggers it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper

import convrewrite as cr
from tests.conv_cases import conv_model, run

S2D = {"name": "s2d", "conv": {"max_stride": 1}}
NARROW = {"name": "narrow", "conv": {"max_in_channels": 16, "max_out_channels": 16}}
ZERO_INSERTION = {"name": "zero_insertion", "conv": {"transposed": False},
                  "rewrite": {"transposed_form": "zero_insertion"}}
RANK_2D = {"name": "rank_2d", "conv": {"spatial_ranks": [2]}}

# name: (target, conv_model arguments, lowering expected, reason when a graph-input weight
# leaves the conv illegal)
CASES = {
    "stride_subsample": ("k210", dict(strides=(2, 2), pads=(1, 1, 1, 1)), "stride", None),
    # space-to-depth is cheaper here for a constant weight; a run-time one is subsampled
    "stride_space_to_depth": (S2D, dict(strides=(2, 2), pads=(1, 1, 1, 1), cin=8, cout=256,
                                        spatial=(16, 16)), "stride", None),
    "dilation": ("generic", dict(dilations=(2, 2), pads=(2, 2, 2, 2)), "dilation", None),
    "channel_split": (NARROW, dict(cin=40, cout=40, pads=(1, 1, 1, 1)), "channel_split", None),
    "groups": ("nvdla", dict(cin=16, cout=16, groups=4, pads=(1, 1, 1, 1)), "groups", None),
    "depth_multiplier": ("k210", dict(cin=4, cout=8, groups=4, pads=(1, 1, 1, 1)),
                         "depth_multiplier", None),
    "padding": ("k210", dict(pads=(0, 1, 2, 0)), "padding", None),
    "kernel_split": ("k210", dict(kernel=(5, 5), pads=(2, 2, 2, 2)), "kernel_split", None),
    "batch": ("generic", dict(batch=2, pads=(1, 1, 1, 1)), "batch", None),
    "tiling": ("k210", dict(spatial=(300, 300), cin=2, cout=2, pads=(1, 1, 1, 1)), "tiling",
               None),
    # a 2x2 kernel zero-extended to k210's 3x3 and taken whole: Concat with zeros, not a Pad
    # (onnxruntime fuses a Pad feeding a Conv's weight into its pads and fails to load)
    "kernel_split_zero_extended": ("k210", dict(kernel=(2, 2)), "kernel_split", None),
    # the weight laid out for Conv in the graph: Transpose (one group), Reshape-Transpose-Reshape
    # (groups), a Reshape (one channel per group); taps flipped by reversed Slices
    "transposed": ("k210", dict(op="ConvTranspose", strides=(2, 2)), "transposed", None),
    "transposed_groups": ("k210", dict(op="ConvTranspose", strides=(2, 2), groups=2),
                          "transposed", None),
    "transposed_depthwise": ("k210", dict(op="ConvTranspose", strides=(2, 2), groups=8),
                             "transposed", None),
    "transposed_zero_insertion": (ZERO_INSERTION, dict(op="ConvTranspose", strides=(2, 2)),
                                  "transposed", None),
    # NVDLA runs no Slice: a run-time weight cannot be flipped there
    "transposed_without_slice": ("nvdla", dict(op="ConvTranspose", strides=(2, 2)),
                                 "transposed", "transposed: the target's ops list lacks Slice, to "
                                 "lay out its weight (computed at run time) as a conv's"),
    "rank": ("nvdla", dict(kernel=(3,), pads=(1, 1), spatial=(16,)), "rank", None),
    # 3-D: the depth taps cut by Split (NVDLA has no Slice: frames per output frame) or by
    # strided Slices (frames on the batch axis)
    "rank_3d_split": ("nvdla", dict(kernel=(3, 3, 3), pads=(1,) * 6, spatial=(4, 5, 6)), "rank",
                      None),
    "rank_3d_slice": (RANK_2D, dict(kernel=(3, 3, 3), pads=(1,) * 6, spatial=(4, 5, 6)), "rank",
                      None),
}


def runtime_weight(model: onnx.ModelProto, form: str) -> onnx.ModelProto:
    """``model`` with its weight W a graph input ("input") or Identity(initializer)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    w = next(t for t in out.graph.initializer if t.name == "W")
    if form == "input":
        out.graph.initializer.remove(w)
        out.graph.input.append(helper.make_tensor_value_info("W", w.data_type, list(w.dims)))
    else:
        w.name = "W0"
        out.graph.node.insert(0, helper.make_node("Identity", ["W0"], ["W"], name="w_id"))
    onnx.checker.check_model(out)
    return out


def feeds(model: onnx.ModelProto, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {i.name: rng.uniform(-1, 1, [d.dim_value for d in i.type.tensor_type.shape.dim])
            .astype(np.float32) for i in model.graph.input}


def assert_same_on_onnxruntime(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    xs = feeds(before)
    ref, got = run(before, xs)[0], run(after, xs)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4,
                               atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def reasons_of(remaining) -> list[str]:
    return [r for rem in remaining for r in (rem["reasons"] if isinstance(rem, dict)
                                              else rem.reasons)]


@pytest.mark.parametrize("form", ["input", "identity"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_run_time_weight_is_lowered_or_declined_with_its_reason(case, form, tmp_path):
    target, kwargs, lowering, reason = CASES[case]
    model = runtime_weight(conv_model(**kwargs), form)
    illegal = reason if form == "input" else None

    out, report = cr.rewrite(model, target)
    if illegal:
        assert report.status == "illegal", report.render()
        assert any(illegal in r for r in reasons_of(report.remaining)), report.render()
    else:
        assert report.status == "ok", report.render()
        assert any(r.pass_name.startswith(lowering) for r in report.records), report.render()
        assert all(r.verify["passed"] for r in report.records)
        assert not cr.check(out, target).remaining
        assert_same_on_onnxruntime(model, out)
        if form == "input":
            assert "W" in {i.name for i in out.graph.input}

    path, written, report_path = tmp_path / "m.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(model, str(path))
    if isinstance(target, dict):
        (tmp_path / "t.yaml").write_text(yaml.safe_dump(target))
        target = str(tmp_path / "t.yaml")
    got = subprocess.run([sys.executable, "-m", "convrewrite.cli", str(path), "--target", target,
                          "-o", str(written), "--report", str(report_path)],
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == (3 if illegal else 0), got.stdout + got.stderr
    cli_report = json.loads(report_path.read_text())
    if illegal:
        assert any(illegal in r for r in reasons_of(cli_report["remaining"])), cli_report
        assert illegal in got.stdout + got.stderr
    else:
        assert cli_report["end_to_end"]["passed"] and cli_report["rewrites"]
        assert_same_on_onnxruntime(model, onnx.load(str(written)))


def test_space_to_depth_says_why_a_run_time_weight_is_subsampled_instead():
    _, kwargs, _, _ = CASES["stride_space_to_depth"]
    _, constant = cr.rewrite(conv_model(**kwargs), S2D)
    assert constant.records[0].rewrite.startswith("space-to-depth")
    _, report = cr.rewrite(runtime_weight(conv_model(**kwargs), "input"), S2D)
    assert "not space-to-depth: it rearranges the weight's taps, computed at run time" in \
        report.records[0].rewrite


@pytest.mark.parametrize("shape,groups", [((8, 4, 3, 3), 1), ((8, 4, 3, 3), 2), ((8, 1, 3), 8),
                                          ((8, 1, 2, 2), 4), ((4, 6, 3, 1, 2), 2),
                                          ((6, 2, 3), 6)])
def test_the_run_time_conv_layout_is_the_constant_one(shape, groups):
    """``weights.conv_layout_views`` (the Reshape / Transpose ops a run-time weight gets)
    computes what ``ConstWeight.conv_layout`` does with numpy."""
    from convrewrite.build.onnx_read import ConstWeight
    from convrewrite.weights import conv_layout_views, runtime_conv_layout_ops

    values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = values
    for op, out_shape, perm in conv_layout_views(shape, groups):
        got = got.transpose(perm) if op == "Transpose" else got.reshape(out_shape)
        assert got.shape == out_shape
    np.testing.assert_array_equal(got, ConstWeight(values).conv_layout(groups).values)
    ops = runtime_conv_layout_ops(shape, groups)
    assert ("Transpose" in ops) == (shape[0] // groups > 1 and shape[1] > 1)
    assert ("Slice" in ops) == any(k > 1 for k in shape[2:])
