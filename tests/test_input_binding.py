"""Symbolic map sizes: a target's size rules are never passed on a size nobody fixed, and
``--input-shape`` fixes it (the batch stays symbolic)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from convrewrite.errors import BadInputError
from convrewrite.input_binding import bind_input_shapes
from tests.test_cli import cli, digest, one_line_error


def symbolic_conv(batch="N", height="H", width="W") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8, height, width])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def input_dims(model: onnx.ModelProto) -> list:
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


@pytest.mark.parametrize("preset", ["k210", "nvdla", "ethos-u55-vela3"])
def test_a_symbolic_map_is_not_ok_where_the_target_bounds_sizes(preset):
    _, report = cr.rewrite(symbolic_conv(), preset)
    assert report.status == "illegal", report.render()
    [unsized] = report.remaining
    assert unsized.node == "x" and unsized.violations[0].value == "unknown"
    assert "--input-shape x:Nx3xHxW with numbers for H, W" in unsized.reasons[0]


def test_no_size_rule_no_claim_to_prove():
    out, report = cr.rewrite(symbolic_conv(), {"conv": {"max_in_channels": 512}})
    assert report.status == "ok" and not report.records


def test_input_shape_fixes_the_map_and_keeps_the_batch():
    model = symbolic_conv()
    out, report = cr.rewrite(model, "k210", input_shapes={"x": (2, 3, 600, 300)})
    assert report.status == "ok", report.render()
    assert report.records                           # 600 rows > K210's 256: tiled
    assert input_dims(out) == ["N", 3, 600, 300]
    assert input_dims(model) == ["N", 3, "H", "W"]  # the caller's model is untouched
    assert any("fixed to 600, 300" in n and "checked and rewritten for that size" in n
               for n in report.notes)
    assert not cr.check(out, "k210").remaining


def test_check_only_note_claims_no_rewrite():
    report = cr.check(symbolic_conv(), "k210", input_shapes={"x": (2, 3, 600, 300)})
    bound = [n for n in report.notes if "fixed to 600, 300" in n]
    assert bound and all("(checked for that size)" in n and "rewritten" not in n for n in bound)


def test_nothing_to_rewrite_gives_back_the_callers_model():
    model = symbolic_conv()
    out, report = cr.rewrite(model, "k210", input_shapes={"x": (1, 3, 64, 64)})
    assert report.status == "ok" and out is model


def test_bad_bindings_name_the_input():
    with pytest.raises(BadInputError, match="--input-shape x: 3 dims given"):
        bind_input_shapes(symbolic_conv(), {"x": (1, 3, 64)})
    with pytest.raises(BadInputError, match="dim 1 is 3 in the model, not 4"):
        bind_input_shapes(symbolic_conv(), {"x": (1, 4, 64, 64)})
    static = symbolic_conv(1, 32, 32)
    assert bind_input_shapes(static, {"x": (1, 3, 32, 32)}) == (static, [])


def test_cli_exit_3_then_ok_with_input_shape(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(symbolic_conv(), path)
    before = digest(path)
    r = cli(path, "--target", "k210", "-o", tmp_path / "out.onnx")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "--input-shape" in r.stdout
    r = cli(path, "--target", "k210", "-o", tmp_path / "out.onnx", "--input-shape", "x:1x3x300x64")
    assert r.returncode == 0, r.stdout + r.stderr
    assert input_dims(onnx.load(tmp_path / "out.onnx")) == ["N", 3, 300, 64]
    r = cli(path, "--target", "k210", "--check-only", "--input-shape", "x:1x3x300x64")
    assert r.returncode == 3 and "input height must be in [4, 256]; node has 300" in r.stdout
    one_line_error(cli(path, "--target", "k210", "-o", tmp_path / "o2.onnx",
                       "--input-shape", "x:1x5x64x64"), 2, "dim 1 is 3")
    assert digest(path) == before
