"""Our ChannelwiseConv op: numpy reference, both standard-ONNX lowerings, cost choice."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

import convrewrite as cr
from convrewrite.ops import DOMAIN
from convrewrite.ops.channelwise import banded_weight, channelwise_reference
from convrewrite.ops.reference import standard_reference
from convrewrite.plan.channelwise import plan_channelwise
from convrewrite.target import load_target
from tests.conv_cases import run
from tests.passes.variant_cases import model_of, ops_of

K210_LIKE = {"name": "k", "conv": {"kernel_shapes": [[1, 1], [3, 3]]}}


def channelwise_model(channels=12, kernel=3, stride=1, pads=(1, 1), size=(4, 5), bias=True):
    rng = np.random.default_rng(3)
    inits = {"W": rng.standard_normal(kernel).astype(np.float32)}
    inputs = ["x", "W"]
    if bias:
        inits["B"] = np.array([0.25], np.float32)
        inputs.append("B")
    node = helper.make_node("ChannelwiseConv", inputs, ["y"], name="cw", domain=DOMAIN,
                            stride=stride, pads=list(pads))
    return model_of([node], inits, [2, channels, *size], own=True), inits


def check_against_numpy(model, inits, stride, pads, target):
    x = np.random.default_rng(4).standard_normal(
        [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    expected = channelwise_reference(x, inits["W"], inits.get("B"), stride, pads)
    np.testing.assert_allclose(run(standard_reference(model), {"x": x})[0], expected, atol=1e-5)
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    np.testing.assert_allclose(run(out, {"x": x})[0], expected, atol=1e-5)
    return out, report


def test_banded_weight_is_the_same_map():
    w = np.array([1.0, 2.0, 3.0], np.float32)
    dense = banded_weight(5, w, 2, (1, 1))
    x = np.arange(5, dtype=np.float32).reshape(1, 5, 1, 1)
    expected = channelwise_reference(x, w, None, 2, (1, 1))[0, :, 0, 0]
    assert np.allclose(dense @ x[0, :, 0, 0], expected)


def test_wide_channels_slide_as_a_conv_narrow_ones_use_the_banded_1x1():
    t = load_target({"name": "any"})
    assert plan_channelwise(512, 8, 1, (4, 3), (14, 14), t).form == "conv"
    assert plan_channelwise(4, 3, 1, (1, 1), (14, 14), t).form == "dense"


def test_engine_rule_outweighs_macs():
    plan = plan_channelwise(512, 8, 1, (4, 3), (14, 14), load_target(K210_LIKE))
    assert plan.form == "dense" and "violations" in plan.strategy


@pytest.mark.parametrize("channels,kernel,stride,pads", [(64, 7, 1, (3, 3)), (12, 3, 2, (1, 1)),
                                                         (10, 4, 1, (0, 0))])
def test_lowered_equals_numpy(channels, kernel, stride, pads):
    model, inits = channelwise_model(channels, kernel, stride, pads)
    out, report = check_against_numpy(model, inits, stride, pads, {"name": "any"})
    assert "ChannelwiseConv" not in ops_of(out)
    assert report.records[0].verify["passed"] and report.end_to_end["passed"]


def test_bad_attributes_are_reported():
    model, _ = channelwise_model(8, 3, 1, (1, 1))
    next(a for a in model.graph.node[0].attribute if a.name == "stride").i = 0
    _, report = cr.rewrite(model, {"name": "any"})
    assert report.status == "illegal"
    assert "stride must be >= 1" in report.remaining[0].reasons[0]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channels=st.integers(2, 40), kernel=st.integers(1, 9), stride=st.integers(1, 3),
       begin=st.integers(0, 3), end=st.integers(0, 3), bias=st.booleans(),
       target=st.sampled_from([{"name": "any"}, K210_LIKE, "nvdla"]))
def test_property_channelwise(channels, kernel, stride, begin, end, bias, target):
    if channels + begin + end < kernel:
        return
    model, inits = channelwise_model(channels, kernel, stride, (begin, end), (3, 3), bias)
    check_against_numpy(model, inits, stride, (begin, end), target)
