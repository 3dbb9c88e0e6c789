"""Dead taps: which kernel taps ``plan.dead_taps`` finds reading only padding on hand-made specs,
what the lowering declines and why, and tiny models rewritten, legal and bit-exact on
onnxruntime."""

from __future__ import annotations

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
