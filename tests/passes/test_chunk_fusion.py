"""Chunk fusion and sum fusion after a channel split: fewer nodes, same numbers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from tests.conv_cases import op_count, random_input, run


def block_model(with_residual: bool, output_mid: bool = False) -> onnx.ModelProto:
    """x(16) -> conv a (16->32) -> [+ x2] -> Relu -> Clip -> conv b (32->16) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for n, s in [("wa", (32, 16, 1, 1)), ("ba", (32,)), ("wb", (16, 32, 3, 3)),
                          ("bb", (16,)), ("ws", (32, 16, 1, 1))]]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in [("lo", 0.0),
                                                                              ("hi", 6.0)]]
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a")]
    mid = "a"
    if with_residual:
        nodes += [helper.make_node("Conv", ["x", "ws"], ["s"], name="conv_s"),
                  helper.make_node("Add", ["a", "s"], ["sum"], name="residual")]
        mid = "sum"
    nodes += [helper.make_node("Relu", [mid], ["r"], name="relu"),
              helper.make_node("Clip", ["r", "lo", "hi"], ["c"], name="clip"),
              helper.make_node("Conv", ["c", "wb", "bb"], ["y"], name="conv_b", pads=[1] * 4)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 6, 6])]
    if output_mid:
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 32, 6, 6]))
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 16, 6, 6])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


TARGET = {"name": "t16", "conv": {"max_in_channels": 16, "max_out_channels": 16}}


def test_concat_relu_clip_split_becomes_per_chunk():
    model = block_model(with_residual=False)
    out, report = cr.rewrite(model, TARGET)
    assert report.status == "ok", report.render()
    assert op_count(out, "Split") == 0 and op_count(out, "Concat") == 0
    assert op_count(out, "Relu") == 2 and op_count(out, "Clip") == 2
    assert any("chunk fusion: 1" in n for n in report.notes)
    unfused, _ = cr.rewrite(model, {**TARGET, "rewrite": {"fuse_chunks": False}})
    assert op_count(unfused, "Split") == 1 and op_count(unfused, "Concat") == 1
    feeds = random_input(model)
    assert np.array_equal(run(out, feeds)[0], run(unfused, feeds)[0])   # exact


def test_residual_add_runs_per_chunk():
    model = block_model(with_residual=True)
    out, report = cr.rewrite(model, TARGET)
    assert report.status == "ok", report.render()
    assert op_count(out, "Split") == 0 and op_count(out, "Concat") == 0
    assert op_count(out, "Add") == 2 + 1     # residual per chunk + conv_b's partial sum


def test_full_consumer_keeps_one_concat():
    model = block_model(with_residual=False, output_mid=True)
    out, report = cr.rewrite(model, TARGET)
    assert report.status == "ok", report.render()
    assert op_count(out, "Split") == 0
    assert op_count(out, "Concat") == 1 and op_count(out, "Relu") == 2    # no duplicate Relu
    feeds = random_input(model)
    ref, got = run(model, feeds), run(out, feeds)
    assert np.array_equal(ref[1], got[1])


def residual_after_split_model() -> onnx.ModelProto:
    """conv (48 -> 8), whose input-split partial sums are then added to a shortcut."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 48, 1, 1)) * 0.2)
                                     .astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "shortcut"], ["s"], name="residual"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "res", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 48, 5, 5]),
        helper.make_tensor_value_info("shortcut", TensorProto.FLOAT, [1, 8, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def conv_operands(model: onnx.ModelProto) -> list[bool]:
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return [any(producers.get(i) == "Conv" for i in n.input)
            for n in model.graph.node if n.op_type == "Add"]


def test_sum_fusion_gives_every_add_a_conv_operand():
    model = residual_after_split_model()
    out, report = cr.rewrite(model, TARGET)
    assert report.status == "ok" and report.end_to_end["passed"], report.render()
    assert conv_operands(out) == [True, True, True]
    assert any("sum fusion" in n for n in report.notes)


def test_tree_sums_are_left_alone():
    model = residual_after_split_model()
    out, report = cr.rewrite(model, {**TARGET, "rewrite": {"accumulate": "tree"}})
    assert report.status == "ok", report.render()
    assert not any("sum fusion" in n for n in report.notes)
    assert not all(conv_operands(out))
