"""Families of exit-4 inputs the fuzzer (test_cli_fuzz.py) found, each rebuilt by hand as a tiny
model so the regression does not hang on a saved binary. Every case goes through ``run_case``:
never exit 4, one stderr line on failure, nothing written, input untouched."""

from __future__ import annotations

import numpy as np
import pytest
import onnx
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


def _conv(x_type=TensorProto.FLOAT, w_dtype=np.float32, b_dtype=np.float32, b_len: int = 8,
          op: str = "Conv", opset: int = 13) -> "onnx.ModelProto":
    """x [1, 8, 8, 8] -> op(x, W [8, 8, 3, 3], B [b_len]), operand types as given."""
    inits = [numpy_helper.from_array(np.full((8, 8, 3, 3), 0.1, w_dtype), "W"),
             numpy_helper.from_array(np.zeros(b_len, b_dtype), "B")]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="pre"),
         helper.make_node(op, ["r", "W", "B"], ["y"], name="conv")], "g",
        [helper.make_tensor_value_info("x", x_type, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", x_type, [1, 8, None, None])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


# (b) operands onnxruntime has no kernel for, or that disagree: left alone, a lowering emitted an
# invalid graph around them (an Add on int32, a Slice of mixed types) and verification crashed.
# Validation refuses them naming the node, on every target, rewrite or not.
BAD_OPERANDS = [
    model_case("conv_int32", lambda: _conv(TensorProto.INT32, np.int32, np.int32), target="k210",
               expect=2, needle="input of type int32"),
    model_case("conv_weight_f16_input_f32", lambda: _conv(w_dtype=np.float16), target="nvdla",
               expect=2, needle="operands of different types"),
    model_case("conv_bias_f64", lambda: _conv(b_dtype=np.float64), target="generic",
               args=("--check-only",), expect=2, needle="bias float64"),
    model_case("conv_bias_wrong_length", lambda: _conv(b_len=5), target="ethos-u55", expect=2,
               needle="bias of shape [5]"),
    model_case("convtranspose_bias_wrong_length", lambda: _conv(b_len=3, op="ConvTranspose"),
               target="k210", expect=2, needle="bias of shape [3]"),
    # controls: one float type throughout is accepted (float16 and opset 6 included)
    model_case("conv_f16_ok", lambda: _conv(TensorProto.FLOAT16, np.float16, np.float16),
               target="k210", expect=(0, 3)),
    model_case("conv_opset6_ok", lambda: _conv(opset=6), target="k210", expect=(0, 3)),
]


@cases_param(BAD_OPERANDS)
def test_conv_operand_types_and_bias(tmp_path, case):
    run_case(case, tmp_path)


def _conv3d(opset: int) -> "onnx.ModelProto":
    """x [1, 8, 4, 6, 6] -> Relu -> Conv 3x3x3 (k210 has no 3-D conv: lowered into 2-D taps)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="pre"),
         helper.make_node("Conv", ["r", "W", "B"], ["y"], name="conv", kernel_shape=[3, 3, 3])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2, 4, 4])],
        [numpy_helper.from_array(np.random.default_rng(1).normal(0, 0.1, (8, 8, 3, 3, 3))
                                 .astype(np.float32), "W"),
         numpy_helper.from_array(np.zeros(8, np.float32), "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _convtranspose(opset: int) -> "onnx.ModelProto":
    """A strided ConvTranspose (nvdla lowers it through a zero-upsampling Pad)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="pre"),
         helper.make_node("ConvTranspose", ["r", "W"], ["y"], name="conv", strides=[2, 2])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 13, 13])],
        [numpy_helper.from_array(np.random.default_rng(2).normal(0, 0.1, (8, 4, 3, 3))
                                 .astype(np.float32), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ops_of_own_opset(folder, result):
    """The conv was lowered, and every Slice / Pad in the output has the form of the output's
    opset (attributes before 10 / 11; an opset-6 input may come back up-converted)."""
    assert "(0 rewritten" not in result.stdout, result.stdout     # something was lowered
    out = onnx.load(str(folder / "out.onnx"))
    opset = next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx"))
    for node in out.graph.node:
        attrs = {a.name for a in node.attribute}
        if node.op_type == "Slice" and opset < 10:
            assert len(node.input) == 1 and "starts" in attrs, node
        if node.op_type == "Pad" and opset < 11:
            assert len(node.input) == 1 and "pads" in attrs, node


# (c) old opsets: lowerings emitted the input form of Slice / Pad (opset 10 / 11 syntax) into an
# opset-6 model, which onnxruntime rejects as an invalid graph. Now an old model is either
# up-converted before rewriting or built through OnnxBuilder in its own opset's form; either way
# the output is valid for the opset it declares, and verification runs it.
OLD_OPSETS = [
    model_case(f"conv3d_k210_opset{v}", (lambda v=v: _conv3d(v)), target="k210", expect=0,
               check=_ops_of_own_opset) for v in (6, 9, 13)
] + [
    model_case(f"convtranspose_nvdla_opset{v}", (lambda v=v: _convtranspose(v)), target="nvdla",
               expect=0, check=_ops_of_own_opset) for v in (6, 10, 13)
]


@cases_param(OLD_OPSETS)
def test_old_opset_lowerings_are_valid(tmp_path, case):
    run_case(case, tmp_path)


def _empty_input(build, axis: int):
    def model():
        m = build(13)
        m.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = 0
        return m
    return model


# (e) a conv over no channels or no pixels (an input extent 0): the ConvTranspose planner divided
# by it (ZeroDivisionError, exit 4). Validation refuses it naming the node and the axis.
EMPTY_INPUT = [
    model_case("convtranspose_empty_height_nvdla", _empty_input(_convtranspose, 2),
               target="nvdla", expect=2, needle="is empty on axis 2"),
    model_case("convtranspose_empty_width_nvdla", _empty_input(_convtranspose, 3),
               target="nvdla", expect=2, needle="is empty on axis 3"),
    model_case("conv3d_empty_depth_k210", _empty_input(_conv3d, 4), target="k210", expect=2,
               needle="[1, 8, 4, 6, 0] is empty on axis 4"),
    model_case("conv_empty_channels", _empty_input(lambda v: _conv(opset=v), 1),
               target="generic", args=("--check-only",), expect=2, needle="is empty on axis 1"),
]


@cases_param(EMPTY_INPUT)
def test_empty_conv_input(tmp_path, case):
    run_case(case, tmp_path)


# (f) absurd attribute values (a pad of 2**63 - 1): the rank lowering's shape arithmetic
# overflowed int64 (OverflowError, exit 4). Validation bounds every extent attribute.
HUGE_ATTRS = [
    model_case("conv3d_pad_int64_max", lambda: _set_attr(_conv3d(13), "pads",
                                                         [1, 1, 1, 1, 1, 2**63 - 1]),
               target="generic", args=("--no-verify", "-o", "out.onnx"), expect=2,
               needle="pads [1, 1, 1, 1, 1, 9223372036854775807]"),
    model_case("convtranspose_stride_2_40", lambda: _set_attr(_convtranspose(13), "strides",
                                                              [2**40, 2]),
               target="nvdla", expect=2, needle="strides"),
]


def _set_attr(model, name, values):
    conv = next(n for n in model.graph.node if n.name == "conv")
    kept = [a for a in conv.attribute if a.name != name]
    del conv.attribute[:]
    conv.attribute.extend(kept + [helper.make_attribute(name, values)])
    return model


@cases_param(HUGE_ATTRS)
def test_huge_attribute_values(tmp_path, case):
    run_case(case, tmp_path)


def test_a_stale_declared_output_shape_does_not_steer_the_crop(tmp_path):
    # found by the model-field fuzzer (exit 1): a 3x3 map under the K210's 4-pixel minimum is
    # grown and the output cropped back; the crop's extent came from the graph output's declared
    # shape ([1, 48, 6, 6]), not from the conv ([1, 48, 3, 3])
    from tests.robustness.model_cases import run_cli
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4, 3, 3))
                                .astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", kernel_shape=[3, 3],
                          pads=[1, 1, 1, 1])], "stale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    got = run_cli(tmp_path, model, "k210")
    assert got.code == 0, got.stdout[-1500:]
    assert got.written and got.input_unchanged
