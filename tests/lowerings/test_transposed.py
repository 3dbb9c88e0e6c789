"""ConvTranspose as plain convs wherever a rule it breaks is one the conv lowerings fix: the
planner's choices and declines on hand-made specs, 1-D/2-D/3-D models on every preset checked
on onnxruntime here, a property over shapes x limits, and every emitted node and tensor
re-checked against the target's ops and rank."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import convrewrite as cr
from convrewrite.conv import ConvSpec
from convrewrite.decline import Decline
from convrewrite.plan.transposed import plan_transposed, transposed_pads
from convrewrite.target import load_target, preset_names
from tests.conv_cases import (conv_model, emitted_within, op_count, random_input,
                              rewrite_legal_and_close, run)


def spec(kernel=(3, 3), strides=(2, 2), dilations=None, pads=None, size=8, **kw):
    rank = len(kernel)
    return ConvSpec(name="c", op_type=kw.pop("op", "ConvTranspose"), in_channels=4,
                    out_channels=4, groups=1, kernel_shape=kernel, strides=strides,
                    dilations=dilations or (1,) * rank, pads=pads or (0,) * (2 * rank),
                    input_shape=(1, 4, *(size,) * rank), **kw)


NO_DECONV = {"name": "t", "conv": {"transposed": False}}


def test_plan_prefers_depth_to_space_where_it_runs():
    plan, others = plan_transposed(spec(), load_target(NO_DECONV))
    assert (plan.form, plan.interleave) == ("subpixel", "depth_to_space")
    assert others == ["zero insertion: 3.57x the MACs"]     # 9 taps x 17^2 over 9 x 9^2


@pytest.mark.parametrize("kernel, strides, ops, rank_limit, interleave", [
    ((3, 3), (2, 3), None, None, "channels_last"),         # unequal strides
    ((8,), (4,), None, None, "channels_last"),             # 1-D
    ((3, 3, 3), (2, 2, 2), None, None, "channels_last"),   # 3-D, 5-D tensors allowed
    ((3, 3, 3), (2, 2, 2), None, 4, "reshape"),            # 3-D within 4-D
    ((3, 3), (2, 2), ["Conv", "Reshape", "Concat", "Slice", "Pad", "Transpose"], None,
     "channels_last"),                                     # no DepthToSpace
    ((3, 3), (2, 2), ["Conv", "Reshape", "Concat", "Slice", "Pad"], None, "reshape"),
])
def test_plan_interleaves_without_depth_to_space(kernel, strides, ops, rank_limit, interleave):
    """Without DepthToSpace (or for other than 2-D equal strides) the channels-last Reshape has
    fewer ops than the per-axis batch folds; the folds remain where the target has no Transpose
    or the conv's own rank is over its tensor rank."""
    target = load_target({**NO_DECONV, **({"ops": ops} if ops else {}),
                          **({"max_tensor_rank": rank_limit} if rank_limit else {})})
    plan, _ = plan_transposed(spec(kernel, strides), target)
    assert (plan.form, plan.interleave) == ("subpixel", interleave)


def test_plan_keeps_rows_out_of_a_limited_batch():
    """Vela 3's core runs batch 1 on every op: the folds that put rows into the batch are not
    taken, and the plan says so; without a Transpose they are all that is left: taken, named."""
    ops = ["Conv", "Reshape", "Concat", "Slice", "Pad"]
    limited = {**NO_DECONV, "max_tensor_batch": 1, "ops": [*ops, "Transpose"]}
    plan, _ = plan_transposed(spec((3, 3), (3, 3)), load_target(limited))
    assert plan.interleave == "channels_last"
    assert any("reads batch 4 (rows folded into the batch; max_tensor_batch 1)" in r
               for r in plan.interleave_reasons), plan.interleave_reasons
    folds, _ = plan_transposed(spec((3, 3), (3, 3)), load_target({**limited, "ops": ops}))
    assert folds.interleave == "reshape"
    assert any("lacks Transpose" in r for r in folds.interleave_reasons)


def test_plan_names_the_tensor_dim_limit_it_breaks():
    """Over max_tensor_dim (8 -> 24 wide, limit 20) every interleave breaks it; the plan keeps
    the one with the fewest ops and says what each breaks (the legality check names the ops)."""
    target = load_target({**NO_DECONV, "max_tensor_dim": 20,
                          "ops": ["Conv", "Reshape", "Concat", "Slice", "Pad", "Transpose"]})
    plan, _ = plan_transposed(spec((3, 3), (3, 3)), target)
    assert plan.interleave == "channels_last"
    assert "interleave by a channels-last Reshape: a 24-long axis (max_tensor_dim 20)" in \
        plan.interleave_reasons


def test_plan_declines_say_why():
    dilated = plan_transposed(spec(dilations=(2, 2)), load_target(NO_DECONV))[0]
    assert dilated.form == "zero_insertion"
    none = plan_transposed(spec(dilations=(2, 2)), load_target({**NO_DECONV, "ops": ["Conv"]}))
    assert isinstance(none, Decline)
    assert "sub-pixel: the sub-pixel form does not take dilated" in none.reason
    assert "zero insertion: the target's ops list lacks Pad, Reshape" in none.reason
    assert "not a transposed conv" in plan_transposed(spec(op="Conv"), load_target(NO_DECONV)
                                                      ).reason


def test_output_shape_attribute_resolves_pads():
    # stride 2, kernel 3 over 8: natural 17; output_shape 16 takes one pixel off the start
    assert transposed_pads(spec(output_size=(16, 16))) == (1, 1, 0, 0)
    assert transposed_pads(spec(auto_pad="SAME_UPPER")) == (0, 0, 1, 1)
    assert transposed_pads(spec(pads=(1, 0, 1, 0))) == (1, 0, 1, 0)


def rewrite_and_compare(model, target, *, strict_rank=True):
    out, report = rewrite_legal_and_close(model, target, rtol=1e-4, atol=2e-5, scale_atol=True,
                                          full_check=True, strict_rank=strict_rank)
    assert op_count(out, "ConvTranspose") <= op_count(model, "ConvTranspose")
    return out, report


def folds_rows_into_a_limited_batch(model, preset) -> bool:
    """3-D on a target whose every op takes batch <= max_tensor_batch and tensors <= 4-D (Vela
    3's core): the channels-last interleave would be 5-D and the other folds rows into the batch,
    so zero insertion's upsampling folds do: the rewrite must not say ok, and must name those ops
    by that rule."""
    if load_target(preset).max_tensor_batch is None:
        return False
    _, report = cr.rewrite(model, preset)
    assert report.status != "ok"
    assert report.remaining and all(
        any(v.rule == "max_tensor_batch" for v in rem.violations) for rem in report.remaining), \
        report.render()
    return True


@pytest.mark.parametrize("preset", preset_names())
def test_audio_decoder_1d_kernel8_stride4_on_every_preset(preset):
    """An audio decoder's 1-D upsampling ConvTranspose (kernel 8, stride 4, pads 2)."""
    model = conv_model(op="ConvTranspose", cin=8, cout=4, kernel=(8,), strides=(4,),
                       pads=(2, 2), spatial=(32,))
    rewrite_and_compare(model, preset)


@pytest.mark.parametrize("preset", preset_names())
@pytest.mark.parametrize("kernel, strides", [((3, 3), (3, 3)), ((4, 4), (4, 4)),
                                             ((3, 3), (3, 2)), ((8, 8), (8, 8))])
def test_2d_strides_above_two_on_every_preset(preset, kernel, strides):
    """Every preset, Vela 3's batch-1 core too (the channels-last interleave keeps batch 1)."""
    model = conv_model(op="ConvTranspose", cin=3, cout=4, kernel=kernel, strides=strides,
                       spatial=(5, 6))
    out, _ = rewrite_and_compare(model, preset)
    assert not any(len(d.type.tensor_type.shape.dim) > 4
                   for d in onnx.shape_inference.infer_shapes(out).graph.value_info)


@pytest.mark.parametrize("preset", preset_names())
def test_3d_transposed_on_every_preset(preset):
    """3-D: the phases are 3-D convs (the rank lowering makes them 2-D where needed); the
    interleave's folds and joins stay within 4-D (between axes it is back at the conv's own
    5-D, as the model's tensors are)."""
    model = conv_model(op="ConvTranspose", cin=4, cout=4, kernel=(4, 4, 4), strides=(2, 2, 2),
                       pads=(1,) * 6, spatial=(3, 4, 4))
    if folds_rows_into_a_limited_batch(model, preset):
        return
    out, _ = rewrite_and_compare(model, preset, strict_rank=False)
    inferred = onnx.shape_inference.infer_shapes(out)
    made = {o for n in out.graph.node if "interleave" in n.name for o in n.output}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info
             if v.name in made}
    within = load_target(preset).max_tensor_rank or 5     # the channels-last form: 5-D
    assert ranks and all(r <= (5 if ".unfold" in name else min(within, 5))
                         for name, r in ranks.items())


BATCH_ONE = {"name": "batch1", "conv": {"transposed": True, "transposed_strides": [1, 2]},
             "max_tensor_batch": 1, "max_tensor_rank": 5,
             "ops": ["Conv", "ConvTranspose", "Reshape", "Concat", "Slice", "Pad", "Add", "Relu",
                     "Split", "Transpose"]}


@pytest.mark.parametrize("kernel, strides, pads, output_padding, spatial", [
    ((8,), (4,), (2, 2), (0,), (9,)),                             # 1-D
    ((3, 3), (3, 3), (0, 0, 0, 0), (0, 0), (5, 6)),               # 2-D
    ((5, 4), (3, 4), (1, 2, 2, 0), (2, 1), (4, 7)),               # unequal, cropped
    ((3, 4, 3), (3, 2, 3), (1, 0, 1, 0, 1, 2), (0, 1, 0), (2, 3, 4)),   # 3-D
])
def test_channels_last_interleave_on_a_batch_one_engine(kernel, strides, pads, output_padding,
                                                        spatial):
    """Every tensor the channels-last interleave makes keeps batch 1 and the conv's own rank,
    and the result matches onnxruntime (the batch folds it replaces read batch C * rows)."""
    model = conv_model(op="ConvTranspose", cin=3, cout=4, kernel=kernel, strides=strides,
                       pads=pads, output_padding=output_padding, spatial=spatial)
    out, report = rewrite_and_compare(model, BATCH_ONE, strict_rank=False)
    assert report.status == "ok", report.render()
    assert "channels-last Reshape" in report.records[0].rewrite
    inferred = onnx.shape_inference.infer_shapes(out)
    shapes = [[d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in inferred.graph.value_info]
    assert shapes and all(s[0] == 1 and len(s) == len(kernel) + 2 for s in shapes if s)
    assert op_count(out, "Transpose") == 2 and op_count(out, "Reshape") == 1


def test_padding_and_kernel_rules_on_a_transposed_conv():
    """The generic preset runs ConvTranspose but not a 9x9 kernel or pads 4: the lowering makes
    it a stride-1 conv, which the kernel split and padding lowerings then fix."""
    model = conv_model(op="ConvTranspose", cin=4, cout=4, kernel=(9, 9), pads=(4,) * 4,
                       spatial=(8, 8))
    out, report = rewrite_and_compare(model, "generic")
    passes = [r.pass_name for r in report.records]
    assert passes[0] == "transposed" and "kernel_split" in passes


@st.composite
def transposed_case(draw):
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    strides = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    kernel = tuple(draw(st.integers(1, 6)) for _ in range(rank))
    dilations = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(rank))
    pads = tuple(draw(st.integers(0, k - 1)) for k in kernel * 2)
    output_padding = tuple(draw(st.integers(0, s - 1)) for s in strides)   # onnxruntime's bound
    size = draw(st.integers(2, 5 if rank < 3 else 3))
    for i in range(rank):
        assume((size - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - pads[i]
               - pads[i + rank] + output_padding[i] > 0)
    groups = draw(st.sampled_from([1, 1, 2]))
    model = conv_model(op="ConvTranspose", cin=2 * groups, cout=2 * groups, groups=groups,
                       kernel=kernel, strides=strides, dilations=dilations, pads=pads,
                       output_padding=output_padding, spatial=(size,) * rank,
                       weight_form=draw(st.sampled_from(["initializer", "qdq_tensor"])),
                       bias=draw(st.booleans()), seed=draw(st.integers(0, 99)))
    conv = {"transposed": draw(st.booleans()), "max_stride": draw(st.integers(1, 4))}
    if conv["transposed"]:
        conv["transposed_strides"] = [1, 2]
    target = {"name": "random", "conv": conv, "max_tensor_rank": 4 if rank < 3 else 5}
    if draw(st.booleans()):       # every op batch 1 (Vela 3's core)
        target["max_tensor_batch"] = 1
    if draw(st.booleans()):       # an engine without DepthToSpace (Ethos-U's ops list)
        target["ops"] = ["Conv", "ConvTranspose", "Reshape", "Concat", "Slice", "Pad", "Add",
                         "Relu", "DequantizeLinear", "Split", "Transpose"]
    return model, target


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(transposed_case())
def test_transposed_property(case):
    model, target = case
    out, report = cr.rewrite(model, target)
    if report.status != "ok":
        # only a form no target op can build is allowed to remain, and it must say why
        assert report.status == "illegal" and all(r.reasons for r in report.remaining), \
            report.render()
        return
    assert not cr.check(out, target).remaining
    assert emitted_within(model, out, target) == [], report.render()
    feeds = random_input(model, seed=5)
    ref, got = run(model, feeds)[0], run(out, feeds)[0]
    np.testing.assert_allclose(got, ref, atol=2e-5 * max(1.0, float(np.abs(ref).max())),
                               rtol=1e-4)
