"""exact_kernels: a uint8 x int8 QLinearConv is run on onnxruntime as its uint8 x uint8 twin, so
that verification compares ONNX semantics. Checked against an int64 numpy reference computed here,
never against onnxruntime itself (whose u8s8 kernel saturates on CPUs without VNNI)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convrewrite.exact_kernels import exact_integer_kernels
from convrewrite.verify import session
from tests.lowerings.test_integer_split import exact_qlinear, integer_model


def full_range_input(seed=1):
    return np.random.default_rng(seed).integers(0, 255, (1, 12, 6, 6), endpoint=True).astype(np.uint8)


@pytest.mark.parametrize("per_channel, bias", [(False, False), (True, True), (False, True)])
def test_u8s8_qlinearconv_runs_exactly(per_channel, bias):
    model = integer_model("QLinearConv", per_channel=per_channel, bias=bias)
    x = full_range_input()
    got = session(model).run(None, {"x": x})[0]
    ref = exact_qlinear(model, x)
    # float32 requantisation may round a .5 tie either way: at most 1 LSB, and rarely
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).sum() <= 2, diff.max()


def test_the_users_model_is_not_changed():
    model = integer_model("QLinearConv")
    before = model.SerializeToString()
    moved = exact_integer_kernels(model)
    assert model.SerializeToString() == before
    assert moved is not model
    weights = {t.name: t.data_type for t in moved.graph.initializer}
    conv = moved.graph.node[0]
    assert weights[conv.input[3]] == weights[conv.input[5]] == TensorProto.UINT8


@pytest.mark.parametrize("op, kwargs", [("QLinearConv", dict(x_dtype=np.int8)),
                                        ("QLinearConv", dict(w_dtype=np.uint8)),
                                        ("ConvInteger", {})])
def test_other_integer_convs_are_left_alone(op, kwargs):
    model = integer_model(op, **kwargs)
    assert exact_integer_kernels(model) is model


def _runtime_weight(model: onnx.ModelProto) -> onnx.ModelProto:
    """The weight fed as a graph input (a weight known only at run time)."""
    w = next(t for t in model.graph.initializer if t.name == "w")
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.INT8, list(w.dims)))
    model.graph.initializer.remove(w)
    return model


def test_runtime_weight_is_moved_by_nodes():
    model = integer_model("QLinearConv", per_channel=True, bias=True)
    weight = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))
    x = full_range_input()
    ref = exact_qlinear(model, x)
    moved = exact_integer_kernels(_runtime_weight(model))
    assert [n.op_type for n in moved.graph.node][-1] == "QLinearConv"
    got = session(moved).run(None, {"x": x, "w": weight})[0]
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_conv_inside_an_if_branch_is_moved():
    inner = integer_model("QLinearConv")
    branch = helper.make_graph(list(inner.graph.node), "then", [], list(inner.graph.output),
                               list(inner.graph.initializer))
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y2"])], "else", [],
                              [helper.make_tensor_value_info("y2", TensorProto.UINT8, None)])
    branch.output[0].name = "y"
    node = helper.make_node("If", ["c"], ["out"], then_branch=branch, else_branch=other)
    graph = helper.make_graph(
        [node], "g", [inner.graph.input[0], helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    moved = exact_integer_kernels(model)
    then = next(a.g for a in moved.graph.node[0].attribute if a.name == "then_branch")
    conv = then.node[0]
    kinds = {t.name: t.data_type for t in then.initializer}
    assert kinds[conv.input[3]] == TensorProto.UINT8
    x = full_range_input()
    got = session(moved).run(None, {"x": x, "c": np.array(True)})[0]
    assert np.abs(got.astype(int) - exact_qlinear(inner, x).astype(int)).max() <= 1


def test_conv_in_a_branch_reading_the_outer_scope_is_moved():
    """The branch's QLinearConv reads its weight and zero points from the main graph's
    initializers (outer scope): they are found there, and moved by nodes inside the branch."""
    inner = integer_model("QLinearConv", per_channel=True, bias=True)
    branch = helper.make_graph(list(inner.graph.node), "then", [], list(inner.graph.output))
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y2"])], "else", [],
                              [helper.make_tensor_value_info("y2", TensorProto.UINT8, None)])
    node = helper.make_node("If", ["c"], ["out"], then_branch=branch, else_branch=other)
    graph = helper.make_graph(
        [node], "g", [inner.graph.input[0], helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, None)],
        list(inner.graph.initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    moved = exact_integer_kernels(model)
    then = next(a.g for a in moved.graph.node[0].attribute if a.name == "then_branch")
    assert then.node[-1].op_type == "QLinearConv" and then.node[-1].input[3].endswith("__uint8")
    x = full_range_input()
    got = session(moved).run(None, {"x": x, "c": np.array(True)})[0]
    assert np.abs(got.astype(int) - exact_qlinear(inner, x).astype(int)).max() <= 1
