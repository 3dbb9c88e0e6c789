"""Overlapping tiles on an engine without Slice (NVDLA): one Split of the (padded) map at every
tile and halo boundary, each tile's window the Concat of its core and the halo chunks it shares
with its neighbours; without Pad the edge tiles keep the conv's own pads. Kernel pieces' shifted
views are cut the same way. Numbers checked on onnxruntime against the original; every emitted
node and tensor re-checked against the target, and every Split/Concat piece against its limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convrewrite as cr
from tests.conv_cases import conv_model, op_count, rewrite_legal_and_close

NO_SLICE = ["Conv", "Relu", "Split", "Concat", "Pad", "Add", "Reshape"]
NO_SLICE_NO_PAD = [op for op in NO_SLICE if op != "Pad"]
AUDIO = [Path("/work/exports/audio1d.ts.onnx"), Path("/work/exports/audio1d.dynamo.onnx")]


def target_1d(limit: int, ops=NO_SLICE, **conv) -> dict:
    return {"name": "t", "conv": {"spatial_ranks": [1], "input_width": [1, limit], **conv},
            "ops": ops}


def compare(model, target):
    out, report = rewrite_legal_and_close(model, target, rtol=1e-5, atol=1e-6)
    assert op_count(out, "Slice") == 0
    return out, report


def pieces_within(model: onnx.ModelProto, limit: int, width: int | None = None) -> None:
    """Every Split chunk and window Concat is at most ``limit`` long along the axis it cuts or
    joins (``width`` on a 2-D map's last axis; the tiles' outputs are joined back to the full map:
    not pieces)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*inferred.graph.value_info, *inferred.graph.output)}
    checked = 0
    for node in model.graph.node:
        if node.op_type in ("Split", "Concat") and "tiles_concat" not in node.name:
            axis = next(a.i for a in node.attribute if a.name == "axis")
            for name in node.output:
                most = width if width is not None and axis == 3 else limit
                assert 0 < dims[name][axis] <= most, (node.name, name, dims[name])
                checked += 1
    assert checked


@pytest.mark.parametrize("kernel,stride,dilation", [
    (3, 1, 1), (5, 1, 1), (80, 1, 1), (3, 2, 1), (5, 3, 1), (80, 4, 1), (3, 1, 2), (5, 2, 2),
    (3, 3, 2)])
def test_1d_overlapping_tiles(kernel, stride, dilation):
    span = (kernel - 1) * dilation + 1
    pad = (span - 1) // 2
    model = conv_model(cin=2, cout=3, kernel=(kernel,), strides=(stride,), dilations=(dilation,),
                       pads=(pad, pad), spatial=(3 * span + 17,))
    limit = span + 2 * stride + 1
    out, report = compare(model, target_1d(limit))
    record = report.records[0]
    assert record.pass_name == "tiling" and "halos by Concat" in record.rewrite
    assert op_count(out, "Split") == 1 and op_count(out, "Pad") == 1
    pieces_within(out, limit)


@pytest.mark.parametrize("ops", [NO_SLICE_NO_PAD, [*NO_SLICE_NO_PAD, "Slice"]])
def test_1d_without_pad_the_edge_tiles_keep_the_pads(ops):
    model = conv_model(cin=2, cout=2, kernel=(5,), pads=(2, 2), spatial=(40,))
    out, report = rewrite_legal_and_close(model, target_1d(12, ops), rtol=1e-5, atol=1e-6)
    assert op_count(out, "Pad") == 0
    assert op_count(out, "Slice" if "Slice" in ops else "Split") >= 1
    assert "edge tiles keep the conv's pads" in report.records[0].rewrite
    pads = [list(a.ints) for n in out.graph.node if n.op_type == "Conv"
            for a in n.attribute if a.name == "pads"]
    assert pads[0] == [2, 0] and pads[-1] == [0, 2] and all(p == [0, 0] for p in pads[1:-1])


def test_without_pad_on_a_symmetric_pad_target_says_why():
    model = conv_model(cin=2, cout=2, kernel=(5,), pads=(2, 2), spatial=(40,))
    out, report = cr.rewrite(model, target_1d(12, NO_SLICE_NO_PAD, symmetric_pad=True))
    assert report.status == "illegal"
    assert any("tiling" in r and "no Pad" in r and "symmetric_pad" in r
               for r in report.remaining[0].reasons)


@pytest.mark.parametrize("ops", [NO_SLICE, NO_SLICE_NO_PAD])
def test_2d_nested_overlapping_tiles(ops):
    target = {"name": "t", "conv": {"input_height": [1, 9], "input_width": [1, 11]}, "ops": ops}
    model = conv_model(cin=3, cout=2, kernel=(3, 5), strides=(1, 2), dilations=(2, 1),
                       pads=(2, 2, 2, 2), spatial=(21, 30))
    out, _ = compare(model, target)
    assert op_count(out, "Split") >= 2 and op_count(out, "Concat") >= 3
    pieces_within(out, 9, 11)


def test_kernel_split_views_without_slice():
    target = {"name": "t", "conv": {"max_kernel": 3}, "ops": NO_SLICE}
    model = conv_model(cin=2, cout=2, kernel=(5, 7), pads=(2, 3, 2, 3), spatial=(9, 11))
    out, report = rewrite_legal_and_close(model, target, rtol=1e-4, atol=1e-5)
    assert op_count(out, "Slice") == 0
    assert "views cut by Split and Concat" in report.records[0].rewrite


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 6), st.integers(1, 3), st.integers(1, 2), st.integers(0, 3),
       st.integers(20, 60), st.integers(0, 6), st.sampled_from([1, 2]), st.booleans())
def test_halo_tiling_property(k, stride, dilation, pad, size, slack, rank, has_pad):
    span = (k - 1) * dilation + 1
    pad = min(pad, span - 1)
    model = conv_model(cin=2, cout=2, kernel=(k,) * rank, strides=(stride,) * rank,
                       dilations=(dilation,) * rank, pads=(pad,) * (2 * rank),
                       spatial=(size,) * rank)
    bounds = [1, span + slack]
    conv = {"input_width": bounds} if rank == 1 else {"input_height": bounds,
                                                      "input_width": bounds}
    target = {"name": "t", "conv": {**conv, "spatial_ranks": [rank]},
              "ops": NO_SLICE if has_pad else NO_SLICE_NO_PAD}
    out, _ = compare(model, target)
    pieces_within(out, bounds[1])


@pytest.mark.parametrize("path", AUDIO, ids=lambda p: p.name)
def test_audio1d_export_on_nvdla(path, tmp_path):
    """The real case: a kernel-80, stride-4 conv over 16,000 samples (not in git)."""
    if not path.exists():
        pytest.skip(f"{path} not exported here")
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "convrewrite.cli", str(path), "--target",
                           "nvdla", "-o", str(out), "--report", str(report)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["status"] == "ok" and not result["remaining"]
    assert op_count(onnx.load(out), "Slice") == 0


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 5), st.integers(2, 3), st.integers(1, 2), st.integers(1, 2),
       st.integers(0, 2), st.sampled_from([1, 2]))
def test_kernel_views_without_slice_property(extra, limit, stride, dilation, pad, rank):
    k = limit + extra                               # always too big for the target
    model = conv_model(cin=2, cout=2, kernel=(k,) * rank, strides=(stride,) * rank,
                       dilations=(dilation,) * rank, pads=(pad,) * (2 * rank),
                       spatial=((k - 1) * dilation + 6,) * rank)
    target = {"name": "t", "conv": {"max_kernel": limit}, "ops": NO_SLICE}
    out, report = rewrite_legal_and_close(model, target, rtol=1e-4, atol=1e-5, scale_atol=True)
    assert op_count(out, "Slice") == 0
    assert any("views cut by Split" in r.rewrite for r in report.records)
