"""Convs whose weight (or bias) is known only at run time (issue 14 item 8): a graph input, a
modulated conv (StyleGAN2: weight times a style from a graph input), weight standardisation
(NF-Nets) of such a weight. Lowerings that only cut the weight slice it in the graph; the result is
checked here on onnxruntime against the original, fed the same weight. Those that need its values
(a dense dilated kernel) decline with that reason."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from tests.conv_cases import op_count, run

NARROW = {"name": "t", "conv": {"max_in_channels": 16, "max_out_channels": 16}}
NO_DILATION = {"name": "t", "conv": {"max_dilation": 1}}


def _model(nodes, inputs, inits, cin=40, cout=24, batch=1, **attrs) -> onnx.ModelProto:
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv",
                            kernel_shape=[3, 3], pads=[1, 1, 1, 1], **attrs)
    graph = helper.make_graph(
        [*nodes, conv], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, 6, 6]), *inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def graph_input_weight(cin=40, cout=24, batch=1, **attrs) -> onnx.ModelProto:
    """The weight and bias are graph inputs of static shape."""
    return _model([], [helper.make_tensor_value_info("w", TensorProto.FLOAT, [cout, cin, 3, 3]),
                       helper.make_tensor_value_info("b", TensorProto.FLOAT, [cout])],
                  {}, cin, cout, batch, **attrs)


def modulated(cin=40, cout=24, standardised=False) -> onnx.ModelProto:
    """StyleGAN2's modulated conv: w = w0 * style[None, :, None, None], style a graph input
    (batch 1); ``standardised``: then NF-Nets' (w - mean) / std over each output channel."""
    rng = np.random.default_rng(3)
    inits = {"w0": rng.standard_normal((cout, cin, 3, 3)).astype(np.float32),
             "b": rng.standard_normal(cout).astype(np.float32),
             "axes": np.array([0, 2, 3], np.int64)}
    nodes = [helper.make_node("Unsqueeze", ["style", "axes"], ["style4"]),
             helper.make_node("Mul", ["w0", "style4"], ["w" if not standardised else "wm"])]
    if standardised:
        inits["eps"] = np.array(1e-5, np.float32)
        nodes += [helper.make_node("ReduceMean", ["wm"], ["mean"], axes=[1, 2, 3]),
                  helper.make_node("Sub", ["wm", "mean"], ["centred"]),
                  helper.make_node("Mul", ["centred", "centred"], ["sq"]),
                  helper.make_node("ReduceMean", ["sq"], ["var"], axes=[1, 2, 3]),
                  helper.make_node("Add", ["var", "eps"], ["var_eps"]),
                  helper.make_node("Sqrt", ["var_eps"], ["std"]),
                  helper.make_node("Div", ["centred", "std"], ["w"])]
    return _model(nodes, [helper.make_tensor_value_info("style", TensorProto.FLOAT, [cin])],
                  inits, cin, cout)


def feeds(model: onnx.ModelProto, seed=1) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for info in model.graph.input:
        shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
        out[info.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return out


def rewritten_and_close(model, target):
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    assert report.records and all(r.verify["passed"] for r in report.records)
    onnx.checker.check_model(out, full_check=True)
    assert not cr.check(out, target).remaining
    xs = feeds(model)
    ref, got = run(model, xs)[0], run(out, xs)[0]
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())),
                               rtol=1e-4)
    return out, report


def test_a_graph_input_weight_is_split_by_slicing_it_in_the_graph():
    out, report = rewritten_and_close(graph_input_weight(), NARROW)
    assert op_count(out, "Conv") == 3 * 2 and op_count(out, "Slice") >= 6
    names = {i.name for i in out.graph.input}
    assert {"w", "b"} <= names and not any(t.name == "w" for t in out.graph.initializer)
    assert any({"w", "b"} & set(r.more_inputs) for r in report.records)


def test_a_modulated_conv_is_split_and_matches_on_onnxruntime():
    out, _ = rewritten_and_close(modulated(), NARROW)
    assert op_count(out, "Conv") == 6 and op_count(out, "Mul") == 1     # the style math once


def test_a_standardised_modulated_weight_is_split():
    rewritten_and_close(modulated(standardised=True), NARROW)


def test_a_grouped_graph_input_weight_is_cut_per_group():
    model = _model([], [helper.make_tensor_value_info("w", TensorProto.FLOAT, [32, 8, 3, 3]),
                        helper.make_tensor_value_info("b", TensorProto.FLOAT, [32])],
                   {}, cin=32, cout=32, group=4)
    rewritten_and_close(model, NARROW)


def test_a_dilated_conv_takes_a_form_that_leaves_the_weights_values_alone():
    model = graph_input_weight(cin=8, cout=8, dilations=[2, 2])
    out, report = rewritten_and_close(model, NO_DILATION)
    assert report.records[0].pass_name in ("dilation", "dilation_taps")
    assert "dense" not in report.records[0].rewrite.split("(")[0]


def test_a_dense_dilated_kernel_needs_the_weights_values():
    """Without the ops of the other forms only the dense kernel is left: declined, saying why."""
    model = graph_input_weight(cin=8, cout=8, dilations=[2, 2])
    target = dict(NO_DILATION, ops=["Conv", "Add"])
    _, report = cr.rewrite(model, target)
    assert report.status == "illegal"
    reasons = [r for remaining in report.remaining for r in remaining.reasons]
    assert any("needs the weight's values; it is computed at run time" in r for r in reasons), \
        reasons

def reshaped_by_unfollowed_shape_arithmetic() -> onnx.ModelProto:
    """A modulated weight reshaped to Max(Shape(w0), Shape(w0)): shape inference (even with
    data propagation) cannot tell its extents; running what computes it can."""
    model = modulated()
    for node in model.graph.node:
        if node.op_type == "Mul":
            node.output[0] = "wm"
    model.graph.node.insert(len(model.graph.node) - 1, helper.make_node("Shape", ["w0"], ["s"]))
    model.graph.node.insert(len(model.graph.node) - 1, helper.make_node("Max", ["s", "s"],
                                                                        ["s2"]))
    model.graph.node.insert(len(model.graph.node) - 1, helper.make_node("Reshape", ["wm", "s2"],
                                                                        ["w"]))
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def test_a_weight_shape_inference_cannot_tell_is_found_by_running_it():
    model = reshaped_by_unfollowed_shape_arithmetic()
    report = cr.check(model, NARROW)
    assert any("weight shape is unknown" in r for rem in report.remaining for r in rem.reasons)
    _, report = rewritten_and_close(model, NARROW)
    assert any("found by running" in n for n in report.notes), report.notes


def test_a_kernel_too_large_is_cut_from_the_zero_extended_weight():
    """5x5 on 3x3 kernels: the weight is zero-extended to 6x6 by one Pad, then cut in taps."""
    target = {"name": "t", "conv": {"kernel_shapes": [[3, 3]]}}
    model = _model([], [helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 8, 5, 5]),
                        helper.make_tensor_value_info("b", TensorProto.FLOAT, [8])],
                   {}, cin=8, cout=8)
    for attr in model.graph.node[0].attribute:
        if attr.name == "kernel_shape":
            attr.ints[:] = [5, 5]
        if attr.name == "pads":
            attr.ints[:] = [2, 2, 2, 2]
    model = onnx.shape_inference.infer_shapes(model)
    out, _ = rewritten_and_close(model, target)
    pads = [n for n in out.graph.node if n.op_type == "Pad" and n.input[0] == "w"]
    assert len(pads) == 1 and op_count(out, "Conv") == 4


def stylegan2_grouped(batch=2, cin=12, cout=12) -> onnx.ModelProto:
    """StyleGAN2's fused modulated conv: per-sample weights w0 * style, demodulated, reshaped to
    [batch * cout, cin, 3, 3] and run as one conv of ``batch`` groups over the batch folded into
    the channels ([1, batch * cin, H, W])."""
    rng = np.random.default_rng(4)
    inits = {"w0": rng.standard_normal((1, cout, cin, 3, 3)).astype(np.float32),
             "b": rng.standard_normal(batch * cout).astype(np.float32),
             "style_axes": np.array([1, 3, 4], np.int64),
             "wshape": np.array([batch * cout, cin, 3, 3], np.int64),
             "eps": np.array(1e-8, np.float32), "sum_axes": np.array([2, 3, 4], np.int64)}
    nodes = [helper.make_node("Unsqueeze", ["style", "style_axes"], ["s5"]),
             helper.make_node("Mul", ["w0", "s5"], ["wm"]),
             helper.make_node("Mul", ["wm", "wm"], ["sq"]),
             helper.make_node("ReduceSum", ["sq", "sum_axes"], ["ss"], keepdims=1),
             helper.make_node("Add", ["ss", "eps"], ["ss_eps"]),
             helper.make_node("Sqrt", ["ss_eps"], ["norm"]),
             helper.make_node("Div", ["wm", "norm"], ["wd"]),
             helper.make_node("Reshape", ["wd", "wshape"], ["w"])]
    return _model(nodes, [helper.make_tensor_value_info("style", TensorProto.FLOAT,
                                                        [batch, cin])],
                  inits, cin=batch * cin, cout=batch * cout, group=batch)


def test_a_stylegan2_fused_modulated_conv_is_cut_per_group():
    out, _ = rewritten_and_close(stylegan2_grouped(), NARROW)
    assert op_count(out, "Conv") == 2


def test_a_batch_too_large_reuses_the_run_time_weight_whole():
    model = graph_input_weight(cin=8, cout=8, batch=4)
    out, _ = rewritten_and_close(model, {"name": "t", "conv": {"max_batch": 1}})
    assert op_count(out, "Conv") == 4
    assert all(n.input[1] == "w" for n in out.graph.node if n.op_type == "Conv")
