"""Dead taps: which kernel taps ``plan.dead_taps`` finds reading only padding on hand-made specs,
what the lowering declines and why, and tiny models rewritten, legal and bit-exact on
onnxruntime."""

from __future__ import annotations

import convrewrite as cr
from convrewrite.conv import ConvSpec
from convrewrite.lowerings.dead_taps import DeadTaps
from convrewrite.plan.dead_taps import plan_dead_taps
from convrewrite.target import load_target
from tests.conv_cases import conv_model, op_count, rewrite_legal_and_close

NO_DILATION = load_target({"name": "nodil", "conv": {"max_dilation": 1}})


def spec(**kw):
    base = dict(name="c", op_type="Conv", in_channels=8, out_channels=4, groups=1,
                kernel_shape=(3, 3), strides=(1, 1), dilations=(36, 36), pads=(36,) * 4,
                input_shape=(1, 8, 6, 6), output_shape=(1, 4, 6, 6))
    base.update(kw)
    return ConvSpec(**base)


def test_plans():
    plan = plan_dead_taps(spec(), spec().pads)
    assert plan.taps == ((1, 1), (1, 1)) and plan.kernel == (1, 1) and plan.pads == (0,) * 4
    # rate 4 on 6 rows: the outer taps see data for some outputs; on columns rate 12 they do not
    wide = spec(dilations=(4, 12), pads=(4, 12, 4, 12))
    plan = plan_dead_taps(wide, wide.pads)
    assert plan.kernel == (3, 1) and plan.pads == (4, 0, 4, 0)
    assert "no kernel tap" in plan_dead_taps(spec(dilations=(1, 1), pads=(1,) * 4),
                                             (1,) * 4).reason
    assert "static input size" in plan_dead_taps(spec(input_shape=None), spec().pads).reason


def test_the_lowering_says_what_it_drops_and_declines_what_it_cannot():
    planned = DeadTaps().plan(spec(), NO_DILATION)
    assert planned.rewrite == "3x3 -> 1x1: taps that only read padding dropped"
    assert planned.tolerance == "exact" and planned.macs_factor == 1 / 9
    assert planned.params_after == spec().params // 9
    assert DeadTaps().plan(spec(op_type="ConvTranspose"), NO_DILATION).reason == \
        "ConvTranspose taps are not trimmed"
    same = DeadTaps().plan(spec(auto_pad="SAME_UPPER", input_shape=(1, 8, None, 6)), NO_DILATION)
    assert "needs a static input size" in same.reason


def test_taps_that_only_read_padding_are_dropped():
    """DeepLab's ASPP at low resolution: dilation 36 on a 6x6 map only ever reads data through
    the centre tap."""
    model = conv_model(cin=8, cout=4, kernel=(3, 3), dilations=(36, 36), pads=(36,) * 4,
                       spatial=(6, 6))
    out, report = rewrite_legal_and_close(model, "k210", rtol=1e-4, atol=2e-5, scale_atol=True)
    assert report.records[0].pass_name == "dead_taps"
    assert "3x3 -> 1x1" in report.records[0].rewrite
    assert report.records[0].verify["bit_exact"]


def test_one_axis_trimmed_keeps_the_other_dilated():
    model = conv_model(cin=4, cout=4, kernel=(3, 3), dilations=(2, 12), pads=(2, 12, 2, 12),
                       spatial=(8, 8))
    target = {"name": "k3", "conv": {"max_dilated_kernel_area": 25}}
    out, report = rewrite_legal_and_close(model, target, rtol=1e-4, atol=2e-5, scale_atol=True)
    assert [r.pass_name for r in report.records] == ["dead_taps"]
    assert "3x3 -> 3x1" in report.records[0].rewrite and op_count(out, "Conv") == 1


def test_a_legal_conv_still_loses_its_dead_taps():
    """A target that runs dilation 36 (ethos-u55 here) still gets the 1x1: the dropped taps are
    MACs on any engine, and Vela costs a dilated kernel's padding-only taps as real work."""
    model = conv_model(cin=8, cout=4, kernel=(3, 3), dilations=(36, 36), pads=(36,) * 4,
                       spatial=(6, 6))
    assert not cr.check(model, "ethos-u55").remaining
    out, report = rewrite_legal_and_close(model, "ethos-u55", rtol=1e-4, atol=2e-5,
                                          scale_atol=True)
    (record,) = report.records
    assert record.pass_name == "dead_taps" and record.rules == []
    assert record.macs_after * 9 == record.macs_before and record.verify["bit_exact"]
    assert "none (MACs saved)" in report.render()
    (conv,) = [n for n in out.graph.node if n.op_type == "Conv"]
    assert [a.ints for a in conv.attribute if a.name == "kernel_shape"] == [[1, 1]]


def test_a_legal_conv_is_not_trimmed_into_an_illegal_one():
    """Where the engine takes the 3x3 but not the 1x1 the trim would make, the conv stays."""
    model = conv_model(cin=8, cout=4, kernel=(3, 3), dilations=(36, 36), pads=(36,) * 4,
                       spatial=(6, 6))
    only_3x3 = load_target({"name": "only3x3", "conv": {"kernel_shapes": [[3, 3]]}})
    out, report = cr.rewrite(model, only_3x3)
    assert report.status == "ok" and report.records == []
    (conv,) = [n for n in out.graph.node if n.op_type == "Conv"]
    assert [a.ints for a in conv.attribute if a.name == "kernel_shape"] == [[3, 3]]


def test_a_legal_conv_without_dead_taps_is_left_alone():
    model = conv_model(cin=8, cout=4, kernel=(3, 3), dilations=(2, 2), pads=(2,) * 4,
                       spatial=(16, 16))
    _, report = cr.rewrite(model, "ethos-u55")
    assert report.status == "ok" and report.records == []


def test_an_illegal_conv_is_trimmed_before_it_is_lowered():
    """A 5x5 depthwise conv on a 2x2 map, on an engine without depthwise convs (nvdla): the taps
    go first, so the group lowering's dense chunks are 3x3 (one trim, not one per chunk)."""
    model = conv_model(cin=16, cout=16, kernel=(5, 5), groups=16, pads=(2,) * 4, spatial=(2, 2))
    out, report = rewrite_legal_and_close(model, "nvdla", rtol=1e-4, atol=2e-5, scale_atol=True)
    assert report.records[0].pass_name == "dead_taps"
    assert [r.pass_name for r in report.records].count("dead_taps") == 1
    kernels = {tuple(a.ints) for n in out.graph.node if n.op_type == "Conv"
               for a in n.attribute if a.name == "kernel_shape"}
    assert kernels == {(3, 3)}
