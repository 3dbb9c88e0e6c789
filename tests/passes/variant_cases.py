"""Small hand-built graphs around the conv variants, and the equivalence check they share."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

import convrewrite as cr
from convrewrite.ops import DOMAIN
from convrewrite.ops.reference import standard_reference
from tests.conv_cases import random_input, run


def model_of(nodes, inits, x_shape, out="y", own=False) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "variant", [helper.make_tensor_value_info("x", 1, x_shape)],
                              [helper.make_tensor_value_info(out, 1, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(DOMAIN, 1)] if own else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def shift_then_pointwise(channels=18, out=8, size=(6, 7), kernel=3, dilation=1, form="op"):
    """Relu -> shift (our op, or the one-hot depthwise conv) -> 1x1 conv."""
    from convrewrite.ops.shift import one_hot_depthwise_weight, shift_offsets
    rng = np.random.default_rng(0)
    inits = {"W": rng.standard_normal((out, channels, 1, 1)).astype(np.float32),
             "B": rng.standard_normal(out).astype(np.float32)}
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="pre")]
    if form == "op":
        nodes.append(helper.make_node("Shift", ["r"], ["s"], name="shift", domain=DOMAIN,
                                      kernel_size=kernel, dilation=dilation))
    else:
        inits["S"] = one_hot_depthwise_weight(shift_offsets(channels, kernel, dilation), kernel,
                                              dilation)
        pad = dilation * (kernel // 2)
        nodes.append(helper.make_node("Conv", ["r", "S"], ["s"], name="shift", group=channels,
                                      kernel_shape=[kernel] * 2, pads=[pad] * 4,
                                      dilations=[dilation] * 2))
    nodes.append(helper.make_node("Conv", ["s", "W", "B"], ["y"], name="pointwise",
                                  kernel_shape=[1, 1]))
    return model_of(nodes, inits, [1, channels, *size], own=form == "op")


def rewrite_and_compare(model, target, atol=1e-5):
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    feeds = random_input(model)
    ref = run(standard_reference(model), feeds)[0]
    got = run(out, feeds)[0]
    np.testing.assert_allclose(got, ref, atol=atol * max(1.0, float(np.abs(ref).max())), rtol=1e-5)
    return out, report


def ops_of(model) -> list[str]:
    return [n.op_type for n in model.graph.node]
