"""Depthwise convs with a channel multiplier on engines that only run multiplier 1."""

from __future__ import annotations

import pytest

from tests.conv_cases import conv_model
from tests.passes.variant_cases import ops_of, rewrite_and_compare

MULTIPLIER_1 = {"name": "m1", "conv": {"max_depth_multiplier": 1}}


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
