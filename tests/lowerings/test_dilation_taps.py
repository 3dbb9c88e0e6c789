"""Per-tap dilation: the three-way choice of ``plan.dilation.choose_dilation`` on hand-made specs
(DeepLabV3's ASPP at 640x640 included), tiny models checked on onnxruntime here, a property over
shapes x limits, and every emitted node and tensor re-checked against the target."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convrewrite.conv import ConvSpec
from convrewrite.decline import Decline
from convrewrite.plan.dilation import choose_dilation, plan_per_tap
from convrewrite.target import load_target
from tests.conv_cases import conv_model, op_count, rewrite_legal_and_close

NO_DILATION = {"name": "nodil", "conv": {"max_dilation": 1, "max_batch": 1}}


def aspp(rate, cin=2048, cout=256, size=80):
    """One ASPP branch of DeepLabV3 at 640x640 (output stride 8: an 80x80 map)."""
    return ConvSpec(name="aspp", op_type="Conv", in_channels=cin, out_channels=cout, groups=1,
                    kernel_shape=(3, 3), strides=(1, 1), dilations=(rate, rate),
                    pads=(rate,) * 4, input_shape=(1, cin, size, size),
                    output_shape=(1, cout, size, size))


@pytest.mark.parametrize("rate", [12, 24, 36])
def test_deeplab_aspp_at_640_takes_the_per_tap_form(rate):
    spec = aspp(rate)
    chosen = choose_dilation(spec, load_target(NO_DILATION), spec.pads)
    assert chosen.form == "per_tap" and len(chosen.plan.taps) == 9
    assert chosen.plan.out_length == (80, 80)
    # both other forms are named with their reason: nothing declines silently
    assert "dense: a dense kernel" in chosen.why and "would hold" in chosen.why
    assert f"space-to-batch: space-to-batch makes a batch of {rate * rate}" in chosen.why


def test_views_follow_dilation_and_stride():
    spec = ConvSpec(name="c", op_type="Conv", in_channels=4, out_channels=4, groups=1,
                    kernel_shape=(2, 3), strides=(2, 1), dilations=(3, 2), pads=(0, 1, 0, 1),
                    input_shape=(1, 4, 10, 9))
    plan = plan_per_tap(spec, load_target(NO_DILATION), (0, 1, 0, 1))
    assert plan.out_length == (4, 7)            # (10 - 4) // 2 + 1, 11 - 5 + 1
    assert plan.starts == ((0, 0), (0, 2), (0, 4), (3, 0), (3, 2), (3, 4))
    assert plan.ends(spec, (3, 4)) == [10, 11]


def test_per_tap_declines_say_why():
    spec = aspp(6, cin=8, cout=8, size=16)
    no_add = load_target({**NO_DILATION, "ops": ["Conv", "Slice", "Pad"]})
    assert "lacks Add" in plan_per_tap(spec, no_add, spec.pads).reason
    dynamic = ConvSpec(**{**spec.__dict__, "input_shape": (1, 8, None, None)})
    assert "static input size" in plan_per_tap(dynamic, no_add, spec.pads).reason
    big = aspp(36)
    none = choose_dilation(big, load_target({**NO_DILATION, "ops": ["Conv"]}), big.pads)
    assert isinstance(none, Decline)
    assert none.reason.startswith("dense: a dense kernel 73x73")
    assert "space-to-batch: space-to-batch makes a batch of 1296" in none.reason
    assert "per-tap: the target's ops list lacks Add, Pad, Slice" in none.reason


def rewrite_and_compare(model, target):
    return rewrite_legal_and_close(model, target, rtol=1e-4, atol=2e-5, scale_atol=True,
                                   full_check=True)


def test_small_map_large_rate():
    """Rate 12 over a 16x16 map: most taps read only padding on the edge rows, yet every tap
    is one 1x1 conv and the sum matches."""
    model = conv_model(cin=32, cout=16, kernel=(3, 3), dilations=(12, 12), pads=(12,) * 4,
                       spatial=(16, 16))
    out, report = rewrite_and_compare(model, NO_DILATION)
    record = next(r for r in report.records if r.pass_name == "dilation_taps")
    assert record.rewrite.startswith("per-tap: 9 1x1 convs")
    assert record.macs_after == record.macs_before and record.verify["passed"]
    assert op_count(out, "Conv") == 9 and op_count(out, "Add") == 8


@st.composite
def dilated_case(draw):
    rank = draw(st.sampled_from([1, 2, 2]))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilations = tuple(draw(st.integers(2, 6)) for _ in range(rank))
    strides = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    pads = tuple(draw(st.integers(0, 6)) for _ in range(2 * rank))
    spatial = tuple(draw(st.integers((k - 1) * d + 1, (k - 1) * d + 10))
                    for k, d in zip(kernel, dilations))
    groups = draw(st.sampled_from([1, 1, 2]))
    model = conv_model(cin=2 * groups * draw(st.integers(1, 3)), cout=2 * groups, groups=groups,
                       kernel=kernel, dilations=dilations, strides=strides, pads=pads,
                       spatial=spatial, bias=draw(st.booleans()),
                       weight_form=draw(st.sampled_from(["initializer", "qdq_channel"])),
                       seed=draw(st.integers(0, 99)))
    target = {"name": "random", "conv": {"max_dilation": draw(st.integers(1, 2)),
                                         "max_batch": 1}, "max_tensor_rank": 4,
              "rewrite": {"accumulate": draw(st.sampled_from(["chain", "tree"]))}}
    return model, target


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(dilated_case())
def test_dilation_property(case):
    model, target = case
    rewrite_and_compare(model, target)
