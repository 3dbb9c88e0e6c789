"""Explicit padding: what ``plan.padding`` keeps, pads and crops on hand-made specs, what the
lowering declines and why, and tiny models rewritten, legal and checked on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx

from convrewrite.conv import ConvSpec
from convrewrite.decline import Decline
from convrewrite.lowerings.padding import ExplicitPadding
from convrewrite.plan.padding import NO_END, plan_padding
from convrewrite.target import load_target
from tests.conv_cases import conv_model, op_count, rewrite_legal_and_close

K210ISH = {"name": "k210ish", "conv": {"kernel_shapes": [[1, 1], [3, 3]], "max_stride": 1,
                                       "max_pad": 1, "same_pad_only": True,
                                       "symmetric_pad": True}}


def spec(**kw):
    base = dict(name="c", op_type="Conv", in_channels=4, out_channels=4, groups=1,
                kernel_shape=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1))
    base.update(kw)
    return ConvSpec(**base)


def rewrite_and_compare(model, target):
    return rewrite_legal_and_close(model, target, rtol=1e-4, atol=2e-5, scale_atol=True)


def test_padding_plans():
    t = load_target(K210ISH)
    plan = plan_padding(spec(pads=(0, 2, 1, 0)), t, (0, 2, 1, 0))
    assert plan.conv_pads == (1, 1, 1, 1)
    assert plan.input_pads == (0, 1, 0, 0)
    assert plan.crop_starts == (1, 0) and plan.crop_ends == (NO_END, -1)
    strided = spec(pads=(0, 0, 0, 0), strides=(2, 2), output_shape=(1, 4, 4, 4))
    plan = plan_padding(strided, t, (0, 0, 0, 0))
    assert plan.input_pads == (1, 1, 0, 0)          # one more zero keeps the stride grid
    assert plan.crop_starts == (1, 1) and plan.crop_ends == (5, 5)
    assert "even" in plan_padding(spec(kernel_shape=(2, 2)), t, (0, 0, 1, 1)).reason
    capped = load_target({"conv": {"max_pad": 2, "symmetric_pad": True}})
    plan = plan_padding(spec(pads=(3, 1, 2, 2)), capped, (3, 1, 2, 2))
    assert plan.conv_pads == (2, 1, 2, 1) and plan.input_pads == (1, 0, 0, 1)


def test_the_lowering_counts_the_cropped_outputs_and_says_what_it_does():
    """Same-padding-only: a conv padded (0, 2 | 1, 0) on 8x8 (a 7x8 output) runs padded 1 all
    round on a Pad's 8x9 and crops its 8x9 outputs to 7x8: the MACs of 8x9 are counted."""
    planned = ExplicitPadding().plan(spec(pads=(0, 2, 1, 0), input_shape=(1, 4, 8, 8),
                                          output_shape=(1, 4, 7, 8)), load_target(K210ISH))
    assert planned.rewrite == "conv pads [1, 1, 1, 1], explicit Pad [0, 1, 0, 0], crop from [1, 0]"
    assert planned.tolerance == "exact"
    assert planned.macs_factor == 1.0 * (8 / 7) * (9 / 8)
    moved = ExplicitPadding().plan(spec(pads=(2, 2, 2, 2), input_shape=(1, 4, 8, 8),
                                        output_shape=(1, 4, 10, 10)),
                                   load_target({"conv": {"max_pad": 1}}))
    assert moved.rewrite == "conv pads [1, 1, 1, 1], explicit Pad [1, 1, 1, 1]"
    assert moved.macs_factor == 1.0


def test_declines_say_why():
    t = load_target({"conv": {"max_pad": 1}, "ops": ["Conv"]})
    assert ExplicitPadding().plan(spec(pads=(2,) * 4), t).reason == \
        "the target's ops list lacks Pad"
    transposed = ExplicitPadding().plan(spec(op_type="ConvTranspose"), t)
    assert isinstance(transposed, Decline) and "only Conv" in transposed.reason
    same = ExplicitPadding().plan(spec(auto_pad="SAME_UPPER", input_shape=(1, 4, None, 8)), t)
    assert "needs a static input size" in same.reason


def test_crops_on_a_same_padding_engine():
    model = conv_model(cin=4, cout=6, kernel=(3, 3), pads=(0, 2, 1, 0), spatial=(8, 8))
    out, report = rewrite_and_compare(model, K210ISH)
    assert [r.pass_name for r in report.records] == ["padding"]
    assert op_count(out, "Pad") == 1 and op_count(out, "Slice") == 1
    assert report.records[0].verify["bit_exact"]


def test_one_and_three_dimensional_convs():
    target = {"name": "pad0", "conv": {"max_pad": 0}}
    rewrite_and_compare(conv_model(cin=3, cout=5, kernel=(3,), pads=(2, 1), spatial=(12,)),
                        target)
    rewrite_and_compare(conv_model(cin=2, cout=3, kernel=(3, 3, 3), pads=(1, 0, 2, 1, 1, 0),
                                   spatial=(5, 6, 7)), target)


def test_explicit_pad_folds_into_a_preceding_pad():
    """A TF-style export: Pad then a conv with no padding; the K210 needs more padding moved out
    of a 5x5 conv... here a 3x3 with pads (2, 2) on a 1-pad engine: one Pad in the result."""
    model = conv_model(cin=4, cout=4, kernel=(3, 3), pads=(2, 2, 2, 2), spatial=(9, 9))
    relu = model.graph.node[0]
    pad_values = onnx.numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                                              "pre_pads")
    model.graph.initializer.append(pad_values)
    model.graph.node.insert(1, onnx.helper.make_node("Pad", [relu.output[0], "pre_pads"],
                                                     ["x_padded"], name="pre_pad"))
    model.graph.node[-1].input[0] = "x_padded"
    out, report = rewrite_and_compare(model, {"name": "pad1", "conv": {"max_pad": 1}})
    assert op_count(out, "Pad") == 1
