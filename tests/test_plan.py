"""Planners without any IR."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from convrewrite.decline import Decline
from convrewrite.conv import ConvSpec
from convrewrite.plan.channels import balanced_chunks, plan_channel_split, split_cost, sum_order
from convrewrite.target import load_target


def test_balanced_chunks():
    assert balanced_chunks(2048, 1024) == [(0, 1024), (1024, 2048)]
    assert balanced_chunks(600, 256, 8) == [(0, 200), (200, 400), (400, 600)]
    assert balanced_chunks(100, 64, 8) == [(0, 56), (56, 100)]
    assert balanced_chunks(10, 3) == [(0, 3), (3, 6), (6, 8), (8, 10)]


@settings(deadline=None)         # a pure planner: time is not what is tested (the box is shared)
@given(st.integers(1, 5000), st.integers(1, 600), st.sampled_from([1, 2, 8, 16, 32]))
def test_chunks_partition_within_limit_and_fewest(total, limit, align):
    chunks = balanced_chunks(total, limit, align)
    assert chunks[0][0] == 0 and chunks[-1][1] == total
    assert all(a < b and b - a <= limit for a, b in chunks)
    assert all(chunks[i][1] == chunks[i + 1][0] for i in range(len(chunks) - 1))
    assert len(chunks) == -(-total // limit)


def test_sum_orders():
    assert sum_order(4, "chain") == [(0, 1), (4, 2), (5, 3)]
    assert sum_order(4, "tree") == [(0, 1), (2, 3), (4, 5)]
    assert sum_order(3, "tree") == [(0, 1), (3, 2)]
    assert sum_order(1, "chain") == []


def spec(cin, cout, groups=1):
    return ConvSpec(name="c", op_type="Conv", in_channels=cin, out_channels=cout, groups=groups,
                    kernel_shape=(1, 1), strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0))


def test_plan_grid_and_groups():
    t = load_target({"conv": {"max_in_channels": 1024, "max_out_channels": 1024}})
    plan = plan_channel_split(spec(2048, 2048), t)
    assert len(plan.blocks) == 2 and all(len(b.terms) == 2 for b in plan.blocks)
    plan = plan_channel_split(spec(2048, 2048, groups=32), t)
    assert [t.groups for t in plan.sub_convs] == [16, 16] and not plan.reassociates
    assert plan_channel_split(spec(512, 512), t) == Decline("channels already within the limits")


@settings(deadline=None)
@given(st.integers(1, 16), st.integers(1, 64), st.integers(1, 64), st.integers(1, 200),
       st.integers(1, 200))
def test_plan_covers_every_weight_once(groups, cin_g, cout_g, max_in, max_out):
    s = spec(groups * cin_g, groups * cout_g, groups)
    plan = plan_channel_split(s, load_target({"conv": {"max_in_channels": max_in,
                                                        "max_out_channels": max_out}}))
    if isinstance(plan, Decline):
        assert s.in_channels <= max_in and s.out_channels <= max_out
        return
    covered = set()
    for sub in plan.sub_convs:
        assert sub.in_channels <= max_in and sub.out_channels <= max_out
        for o in range(sub.out_start, sub.out_stop):
            g = o // cout_g
            local = range(sub.w_in_start, sub.w_in_stop)
            # the sub-conv's input must be the channels this weight range multiplies
            sub_group = (o - sub.out_start) // (sub.out_channels // sub.groups)
            first_in = sub.in_start + sub_group * (sub.in_channels // sub.groups)
            assert first_in == g * cin_g + sub.w_in_start
            covered.update((o, i) for i in local)
    assert covered == {(o, i) for o in range(s.out_channels) for i in range(cin_g)}
    blocks = plan.blocks
    assert blocks[0].out_start == 0 and blocks[-1].out_stop == s.out_channels


def test_split_cost_by_the_model():
    """The record's cost figure: more sub-convs on a small map cost relatively more (each pays a
    node's fixed cost), a tree's Adds of partial sums cost copies a chain's fused Adds do not, and
    a map of unknown size is costed and says so."""
    def sized(cin, cout, side):
        return replace(spec(cin, cout), input_shape=(1, cin, side, side),
                       output_shape=(1, cout, side, side))

    def cost(s, limit, accumulate="chain"):
        target = load_target({"name": "t", "conv": {"max_in_channels": limit,
                                                    "max_out_channels": limit},
                              "rewrite": {"accumulate": accumulate}})
        after, before, known = split_cost(s, plan_channel_split(s, target), use_split=True)
        return after / before, known

    small, known = cost(sized(2048, 512, 7), 128)
    large, _ = cost(sized(2048, 512, 56), 128)
    assert known and small > large > 1.0
    assert cost(sized(2048, 512, 7), 512)[0] < small          # fewer sub-convs
    assert cost(sized(2048, 512, 7), 128, "tree")[0] > small   # unfused Adds
    assert cost(spec(2048, 512), 128)[1] is False
