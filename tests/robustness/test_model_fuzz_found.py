"""Families of exit-4 inputs the fuzzer (test_cli_fuzz.py) found, each rebuilt by hand as a tiny
model so the regression does not hang on a saved binary. Every case goes through ``run_case``:
never exit 4, one stderr line on failure, nothing written, input untouched."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from convrewrite.build.onnx_read import quant_params_mismatch
from tests.robustness.harness import cases_param, model_case, run_case


def _qdq_conv(scale: np.ndarray, zero_point: "np.ndarray | str | None", axis: int = 0,
              cout: int = 16, cin: int = 16) -> "onnx.ModelProto":
    """x -> Conv(x, DequantizeLinear(W_q, scale, zero_point)); ``zero_point`` may name another
    tensor (the fuzzer wired it to W_q itself)."""
    rng = np.random.default_rng(0)
    w_q = rng.integers(-100, 100, (cout, cin, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(w_q, "W_q"),
             numpy_helper.from_array(scale.astype(np.float32), "W_scale")]
    dq_inputs = ["W_q", "W_scale"]
    if isinstance(zero_point, str):
        dq_inputs.append(zero_point)
    elif zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point.astype(np.int8), "W_zp"))
        dq_inputs.append("W_zp")
    nodes = [helper.make_node("DequantizeLinear", dq_inputs, ["W"], name="W_dq", axis=axis),
             helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[3, 3])]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


# (a) a DequantizeLinear whose scale or zero point cannot dequantize the weight: weight_sum used
# to broadcast them against the weight and crash. Validation names the node, exit 2.
BAD_DQ = [
    model_case("dq_zero_point_is_the_weight", lambda: _qdq_conv(np.full(16, 0.01), "W_q"),
               target="nvdla", expect=2, needle="'W_dq' zero point has shape [16, 16, 3, 3]"),
    model_case("dq_scale_wrong_length", lambda: _qdq_conv(np.full(8, 0.01), np.zeros(8)),
               target="ethos-u55", expect=2, needle="'W_dq' scale has shape [8]"),
    model_case("dq_scale_2d", lambda: _qdq_conv(np.full((16, 1), 0.01), None),
               target="nvdla", args=("--check-only",), expect=2, needle="scale has shape [16, 1]"),
    model_case("dq_axis_out_of_range", lambda: _qdq_conv(np.full(16, 0.01), None, axis=5),
               target="nvdla", expect=2, needle="axis 5"),
    # controls: valid per-axis and per-tensor parameters are not refused
    model_case("dq_per_axis_ok", lambda: _qdq_conv(np.full(16, 0.01), np.zeros(16)),
               target="ethos-u55", expect=(0, 3)),
    model_case("dq_per_tensor_ok", lambda: _qdq_conv(np.array(0.01), np.zeros(1)),
               target="nvdla", expect=(0, 3)),
]


@cases_param(BAD_DQ)
def test_weight_dequantize_parameters(tmp_path, case):
    run_case(case, tmp_path)


@pytest.mark.parametrize("scale, zp, axis, ok", [
    (np.ones(4), np.zeros(4), 0, True), (np.ones(()), None, 0, True), (np.ones(1), None, 1, True),
    (np.ones(3), None, 1, True), (np.ones(4), None, 1, False), (np.ones(4), np.zeros(1), 0, False),
    (np.ones((4, 1)), None, 0, False), (np.ones(4), None, -4, True), (np.ones(4), None, 4, False),
])
def test_quant_params_mismatch(scale, zp, axis, ok):
    assert (quant_params_mismatch(np.zeros((4, 3, 2, 2)), axis, scale, zp) is None) == ok
