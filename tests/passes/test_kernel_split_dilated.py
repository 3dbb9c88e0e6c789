"""The kernel split measured by dilated extent (``max_dilated_kernel_height`` / ``_area``, Vela's
"dilated_height_range = (1, 64)" and "dilated_product_range = (1, 64 * 64)"): sub-kernels keep
the conv's dilation and each spans dilation * (taps - 1) + 1 within the limits; the tile is
chosen by cost among the area's frontier and its balanced forms. Each rewrite runs on
onnxruntime against the original; a property covers shapes x limits."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convrewrite.conv import ConvSpec
from convrewrite.decline import Decline
from convrewrite.plan.kernel import dilated_extent, plan_kernel_split
from convrewrite.rules import fixers
from convrewrite.target import load_target
from tests.conv_cases import conv_model, op_count, rewrite_legal_and_close


def spec(kernel, dilations, **kw):
    base = dict(name="c", op_type="Conv", in_channels=4, out_channels=4, groups=1,
                kernel_shape=kernel, strides=(1,) * len(kernel), dilations=dilations,
                pads=(0,) * (2 * len(kernel)))
    base.update(kw)
    return ConvSpec(**base)


def target(**conv):
    return load_target({"name": "dilated-limits", "conv": conv})


def test_the_kernel_split_owns_the_dilated_rules():
    assert "kernel_split" in fixers("max_dilated_kernel_height")
    assert "kernel_split" in fixers("max_dilated_kernel_area")


def test_height_tile_counts_the_dilation():
    """Vela 3's probe: 3x3 at dilation 33 x 1 spans 67 rows > 64; two taps span 34, three 67:
    two 2-row sub-kernels (the kernel zero-extended by one row)."""
    plan = plan_kernel_split(spec((3, 3), (33, 1)), target(max_dilated_kernel_height=64))
    assert plan.tile == (2, 3) and plan.pieces == (2, 1)
    assert dilated_extent(plan.tile[0], 33) == 34


def test_area_tile_is_chosen_on_the_frontier_by_cost():
    """64x65 (area 4160 > 4096): two 32x65 halves cover it without a zero tap; the maximal
    tiles 63x65 and 64x64 would zero-extend it to 126x65 or 64x128."""
    plan = plan_kernel_split(spec((64, 65), (1, 1)), target(max_dilated_kernel_area=4096))
    assert plan.tile == (32, 65) and plan.padded_kernel == (64, 65)
    rejected = [t for t, _ in plan.alternatives]
    assert (63, 65) in rejected and (64, 64) in rejected


def test_dilated_kernel_shapes_are_filtered_by_extent():
    """Listed kernel shapes count too: a 3x3 at dilation 2 spans 5 > 4 rows, so only 1x1 is left."""
    k210ish = target(kernel_shapes=[[1, 1], [3, 3]], max_dilated_kernel_height=4)
    plan = plan_kernel_split(spec((3, 3), (2, 1)), k210ish)
    assert plan.tile == (1, 1) and plan.pieces == (3, 3)


def test_a_legal_dilated_kernel_is_left_alone():
    got = plan_kernel_split(spec((3, 3), (31, 31)), target(max_dilated_kernel_height=64,
                                                           max_dilated_kernel_area=4096))
    assert isinstance(got, Decline) and "already legal" in got.reason


@pytest.mark.parametrize("geometry, rules, pieces", [
    (dict(kernel=(3, 3), dilations=(5, 1), pads=(5, 1, 5, 1), spatial=(14, 9)),
     dict(max_dilated_kernel_height=8), 2),
    (dict(kernel=(4, 5), pads=(1, 2, 2, 2), spatial=(9, 9)),
     dict(max_dilated_kernel_area=12), 2),
    (dict(kernel=(3, 3), dilations=(2, 3), strides=(2, 1), pads=(2, 3, 1, 3), spatial=(11, 12)),
     dict(max_dilated_kernel_height=3, max_dilated_kernel_area=10), 3),
    (dict(kernel=(5,), dilations=(3,), pads=(6, 6), spatial=(20,)),
     dict(max_dilated_kernel_area=7), 2),
    (dict(kernel=(3, 3, 2), dilations=(1, 2, 2), pads=(1, 2, 1) * 2, spatial=(5, 7, 6)),
     dict(max_dilated_kernel_height=3, max_dilated_kernel_area=12), 3),
    (dict(kernel=(3, 3), dilations=(4, 4), pads=(4,) * 4, spatial=(10, 10), groups=4),
     dict(max_dilated_kernel_area=25), 3),
], ids=["height", "area", "both-strided", "1-d", "3-d", "grouped"])
def test_dilated_kernel_split_matches(geometry, rules, pieces):
    cin = 8 if geometry.get("groups") else 3
    model = conv_model(cin=cin, cout=8 if geometry.get("groups") else 5, **geometry)
    out, report = rewrite_legal_and_close(model, {"name": "t", "conv": rules}, rtol=1e-4,
                                          atol=2e-5, scale_atol=True)
    assert [r.pass_name for r in report.records] == ["kernel_split"]
    assert report.records[0].rules and report.records[0].rules[0].rule in rules
    assert op_count(out, "Conv") == pieces


@st.composite
def dilated_case(draw):
    rank = draw(st.sampled_from([1, 2, 2, 2, 3]))
    kernel = tuple(draw(st.integers(1, 6 if rank < 3 else 3)) for _ in range(rank))
    dilations = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    pads = tuple(draw(st.integers(0, 4)) for _ in range(2 * rank))
    extents = [dilated_extent(k, d) for k, d in zip(kernel, dilations)]
    spatial = tuple(max(1, e - pads[i] - pads[i + rank]) + draw(st.integers(0, 5))
                    for i, e in enumerate(extents))
    rules = {}
    if rank >= 2 and draw(st.booleans()):
        rules["max_dilated_kernel_height"] = draw(st.integers(1, extents[-2]))
    if draw(st.booleans()) or not rules:
        rules["max_dilated_kernel_area"] = draw(st.integers(1, math.prod(extents)))
    height, area = (extents[-2] if rank >= 2 else 1), math.prod(extents)
    assume(height > rules.get("max_dilated_kernel_height", height)
           or area > rules.get("max_dilated_kernel_area", area))
    groups = draw(st.sampled_from([1, 1, 2]))
    model = conv_model(cin=2 * groups, cout=3 * groups, groups=groups, kernel=kernel,
                       strides=strides, dilations=dilations, pads=pads, spatial=spatial,
                       weight_form=draw(st.sampled_from(["initializer", "qdq_channel"])),
                       seed=draw(st.integers(0, 99)))
    return model, {"name": "random-dilated", "conv": rules}


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(dilated_case())
def test_dilated_kernel_split_property(case):
    """Any kernel, dilation, stride and padding against any dilated height / area limits: the
    rewrite is legal, emits only what the target holds, and matches onnxruntime."""
    model, rules = case
    rewrite_legal_and_close(model, rules, rtol=1e-4, atol=2e-5, scale_atol=True)
