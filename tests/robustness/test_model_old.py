"""Older and odder models (issue 12, class 5): every opset from 7 to the newest onnx knows
rewrites into a valid model; IR-3 rules kept; weights or biases that are graph inputs are cut in
the graph; dead convs, empty batches and symbolic batches in the shuffle probe work."""

from __future__ import annotations

import json

import onnx
import pytest

import convrewrite as cr
from convrewrite.legacy import MIN_REWRITE_OPSET

from .model_cases import conv_model, run_cli

NEWEST = onnx.defs.onnx_opset_version()


def _ir_for(opset: int) -> int | None:
    return 3 if opset <= 8 else (4 if opset == 9 else None)


@pytest.mark.parametrize("opset", range(7, NEWEST + 1))
def test_every_opset_rewrites_into_a_valid_model(tmp_path, opset):
    ir = _ir_for(opset)
    model = conv_model(k=7, hw=12, opset=opset, ir=ir, initializers_as_inputs=ir == 3)
    got = run_cli(tmp_path, model, "k210", "--report", str(tmp_path / "r.json"))
    assert got.code == 0, got.stderr
    out = onnx.load(str(got.output))
    onnx.checker.check_model(out, full_check=True)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rewrites"] and report["end_to_end"]["passed"]
    version = next(i.version for i in out.opset_import if i.domain in ("", "ai.onnx"))
    if opset < MIN_REWRITE_OPSET:
        assert version == MIN_REWRITE_OPSET
        assert any(f"up-converted from opset {opset}" in n for n in report["notes"])
    else:
        assert version == opset


def test_ir3_lists_every_initializer_it_adds_as_an_input(tmp_path):
    model = conv_model(k=7, ir=3, opset=13, initializers_as_inputs=True)
    got = run_cli(tmp_path, model)
    assert got.code == 0, got.stderr
    out = onnx.load(str(got.output))
    onnx.checker.check_model(out, full_check=True)
    assert out.ir_version == 3 and len(out.graph.initializer) > 2
    assert {t.name for t in out.graph.initializer} <= {i.name for i in out.graph.input}


@pytest.mark.parametrize("role, kwargs", [("weight", {"weight_input": True}),
                                          ("bias", {"bias_input": True})])
def test_weight_or_bias_graph_input_is_cut_in_the_graph(tmp_path, role, kwargs):
    """Known only at run time, the operand stays a graph input: the 7x7 kernel is cut from it
    in the graph (Pad, Slices), and the rewrite is verified fed it."""
    got = run_cli(tmp_path, conv_model(k=7, **kwargs), "k210",
                  "--report", str(tmp_path / "r.json"))
    assert got.code == 0, got.stdout + got.stderr
    out = onnx.load(str(got.output))
    onnx.checker.check_model(out, full_check=True)
    assert ("W" if role == "weight" else "B") in {i.name for i in out.graph.input}
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rewrites"] and report["end_to_end"]["passed"]


def test_unused_graph_input_feeding_a_dead_conv(tmp_path):
    model = conv_model(k=7)
    model.graph.input.append(onnx.helper.make_tensor_value_info("unused", 1, [1, 4, 8, 8]))
    model.graph.node.append(onnx.helper.make_node("Conv", ["unused", "W"], ["dead"],
                                                  name="dead_conv"))
    got = run_cli(tmp_path, model)
    assert got.code == 0, got.stderr
    onnx.checker.check_model(onnx.load(str(got.output)), full_check=True)


def test_zero_size_batch(tmp_path):
    got = run_cli(tmp_path, conv_model(k=7, batch=0))
    assert got.code == 0, got.stderr
    onnx.checker.check_model(onnx.load(str(got.output)), full_check=True)


def test_symbolic_batch_in_the_shuffle_probe():
    """The shuffle's shape arithmetic reads the model's input (dynamic batch): the probe region
    declares it as an input too, so the shuffle is found and removed."""
    from tests.passes.test_shuffle import FOUR_D, shuffle_model
    model = shuffle_model(dynamic=True)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for node in model.graph.node:
        if node.op_type == "Shape":
            node.input[0] = model.graph.input[0].name
    out, report = cr.rewrite(model, FOUR_D)
    assert report.status == "ok" and report.records, [r.reasons for r in report.remaining]
    onnx.checker.check_model(out, full_check=True)
