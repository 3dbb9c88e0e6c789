"""Depthwise convs with a channel multiplier on engines that only run multiplier 1: the plan's
form, cost and declines, and tiny models rewritten and checked on onnxruntime."""

from __future__ import annotations

import pytest

from convrewrite.conv import ConvSpec
from convrewrite.lowerings.depth_multiplier import DepthMultiplierLowering
from convrewrite.target import load_target
from tests.conv_cases import conv_model
from tests.passes.variant_cases import ops_of, rewrite_and_compare

MULTIPLIER_1 = {"name": "m1", "conv": {"max_depth_multiplier": 1}}


def spec(**kw):
    base = dict(name="c", op_type="Conv", in_channels=4, out_channels=4, groups=1,
                kernel_shape=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1))
    base.update(kw)
    return ConvSpec(**base)


@pytest.mark.parametrize("kernel", [(3, 3), (5,), (3, 3, 3)])
def test_multiplier_becomes_a_repeat_and_a_multiplier_1_depthwise(kernel):
    model = conv_model(cin=6, cout=18, groups=6, kernel=kernel)
    out, report = rewrite_and_compare(model, MULTIPLIER_1, atol=1e-6)
    assert ops_of(out).count("Gather") == 1
    assert report.records[0].verify["passed"]


def test_ethos_u55_vela3_rule_single_input_channel():
    model = conv_model(cin=4, cout=8, groups=4, spatial=(8, 8))
    out, report = rewrite_and_compare(model, "ethos-u55-vela3", atol=1e-6)
    assert report.records[0].pass_name == "depth_multiplier"


def test_without_gather_a_one_hot_conv_repeats():
    target = {"name": "no-gather", "conv": {"max_depth_multiplier": 1}, "ops": ["Conv", "Relu"]}
    out, _ = rewrite_and_compare(conv_model(cin=4, cout=8, groups=4), target, atol=1e-6)
    assert ops_of(out).count("Conv") == 2


def test_plan_words_cost_and_declines():
    depthwise = spec(in_channels=4, out_channels=8, groups=4, input_shape=(1, 4, 8, 8))
    planned = DepthMultiplierLowering().plan(depthwise, load_target(MULTIPLIER_1))
    assert planned.detail.form == "gather" and planned.macs_factor == 1
    assert planned.rewrite.startswith("input channels repeated x2 by a Gather")
    no_gather = load_target({**MULTIPLIER_1, "ops": ["Conv"]})
    planned = DepthMultiplierLowering().plan(depthwise, no_gather)
    assert planned.detail.form == "conv" and planned.macs_factor == 1 + 8 / 9
    assert DepthMultiplierLowering().plan(depthwise, load_target(
        {**MULTIPLIER_1, "ops": ["Relu"]})).reason == "the target's ops list lacks Conv"
    dense = DepthMultiplierLowering().plan(spec(), load_target(MULTIPLIER_1))
    assert dense.reason == "not a depthwise conv with a multiplier"
