"""Tiling on an engine without Slice (NVDLA: ONNC has no Slice emitter): where the tiles' input
windows do not overlap (kernel extent <= stride: YOLO's 1x1 DFL conv over 8400 anchors) they are
cut by one Split per axis (overlapping windows: tests/passes/test_tiling_halo.py). Numbers checked
on onnxruntime here; every emitted node and tensor re-checked against the target."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convrewrite as cr
from convrewrite.plan.tiling import tile_windows
from convrewrite.plan.windows import cut_axis
from tests.conv_cases import conv_model, op_count, rewrite_legal_and_close

NO_SLICE = ["Conv", "Relu", "Split", "Concat", "Pad", "Add", "Reshape"]


def compare(model, target):
    # the same products and sums per output; onnxruntime may block a narrower conv differently
    return rewrite_legal_and_close(model, target, rtol=1e-5, atol=1e-6)


def test_window_split_sizes():
    # stride 3, kernel 2 over 14 samples, tiles of outputs [0, 2) and [2, 4): windows [0, 5)
    # and [6, 11), a gap of 1 and a tail of 3 that no tile reads
    spans, pads = tile_windows(((0, 2), (2, 4)), 2, 3, 14, 0, 0, True)
    cut = cut_axis(spans, 14)
    assert (cut.sizes, cut.windows, cut.overlapping) == ((5, 1, 5, 3), ((0,), (2,)), False)
    assert pads == ((0, 0), (0, 0))
    # kernel 3, stride 1 over 10: windows [0, 6) and [4, 10) share the 2-sample halo [4, 6)
    cut = cut_axis(tile_windows(((0, 4), (4, 8)), 3, 1, 10, 0, 0, True)[0], 10)
    assert (cut.sizes, cut.windows, cut.overlapping) == ((4, 2, 4), ((0, 1), (1, 2)), True)


def test_yolo_dfl_head_on_nvdla():
    """YOLOv8's DFL: a 16 -> 1 1x1 conv over [1, 16, 4, 8400]; NVDLA reads at most 8192."""
    model = conv_model(cin=16, cout=1, kernel=(1, 1), spatial=(4, 8400), bias=False)
    out, report = compare(model, "nvdla")
    assert op_count(out, "Split") == 1 and op_count(out, "Slice") == 0
    assert "cut by Split" in report.records[0].rewrite


def test_both_axes_nested_split():
    target = {"name": "t", "conv": {"input_height": [1, 6], "input_width": [1, 7]},
              "ops": NO_SLICE}
    model = conv_model(cin=3, cout=2, kernel=(2, 2), strides=(2, 3), spatial=(13, 17))
    out, _ = compare(model, target)
    assert op_count(out, "Slice") == 0 and op_count(out, "Split") >= 2


def test_no_slice_nor_split_says_why():
    model = conv_model(cin=4, cout=4, kernel=(3, 3), pads=(1,) * 4, spatial=(8, 9000))
    target = {"name": "t", "extends": "nvdla",
              "ops": [op for op in NO_SLICE if op != "Split"]}
    out, report = cr.rewrite(model, target)
    assert report.status == "illegal"
    assert any("tiling" in r and "lacks Split" in r for r in report.remaining[0].reasons)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3), st.integers(0, 2), st.integers(10, 40), st.integers(3, 12),
       st.sampled_from([1, 2]))
def test_split_tiling_property(k, extra_stride, size, limit, rank):
    stride = k + extra_stride                       # windows never overlap
    kernel, strides = (k,) * rank, (stride,) * rank
    model = conv_model(cin=2, cout=3, kernel=kernel, strides=strides, spatial=(size,) * rank)
    bounds = [1, max(limit, k)]
    conv = {"input_width": bounds} if rank == 1 else {"input_height": bounds,
                                                      "input_width": bounds}
    target = {"name": "t", "conv": {**conv, "spatial_ranks": [rank]}, "ops": NO_SLICE}
    compare(model, target)
