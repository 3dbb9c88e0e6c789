"""Stride, kernel-split and padding lowerings on tiny graphs, and a property over random
geometry x random engine rules; every result is legal and matches on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import convrewrite as cr
from convrewrite.conv import ConvSpec
from convrewrite.plan.kernel import plan_kernel_split
from convrewrite.plan.stride import plan_stride
from convrewrite.target import load_target
from tests.conv_cases import emitted_within, conv_model, op_count, random_input, run

K210ISH = {"name": "k210ish", "conv": {"kernel_shapes": [[1, 1], [3, 3]], "max_stride": 1,
                                       "max_pad": 1, "same_pad_only": True,
                                       "symmetric_pad": True}}


def rewrite_and_compare(model, target, batch=1):
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    assert not cr.check(out, target).remaining
    feeds = random_input(model, batch=batch)
    ref, got = run(model, feeds)[0], run(out, feeds)[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-5 * max(1.0, float(np.abs(ref).max())),
                               rtol=1e-4)
    return out, report


def spec(**kw):
    base = dict(name="c", op_type="Conv", in_channels=4, out_channels=4, groups=1,
                kernel_shape=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1))
    base.update(kw)
    return ConvSpec(**base)


def test_stride_plans():
    t = load_target({"conv": {"max_stride": 2}})
    plan = plan_stride(spec(strides=(4, 3)), t, (1, 1, 1, 1))
    assert plan.conv_strides == (2, 1) and plan.output_steps == (2, 3)
    plan = plan_stride(spec(kernel_shape=(1, 1), strides=(4, 4), pads=(0,) * 4), t, (0,) * 4)
    assert plan.input_steps == (2, 2) and plan.output_steps == (1, 1) and plan.mac_factor == 1


def test_kernel_plan_chooses_by_cost():
    t = load_target(K210ISH)
    plan = plan_kernel_split(spec(kernel_shape=(7, 7)), t)
    assert plan.tile == (3, 3) and plan.pieces == (3, 3)
    assert [tile for tile, _ in plan.alternatives] == [(1, 1)]
    plan = plan_kernel_split(spec(kernel_shape=(1, 7)), t)
    assert plan.tile == (1, 1) and plan.pieces == (1, 7)       # 7 taps beat 3 zero-padded 3x3s
    plan = plan_kernel_split(spec(kernel_shape=(5, 5)), load_target({"conv": {"max_kernel": 3}}))
    assert plan.tile == (3, 3) and plan.padded_kernel == (6, 6)


def test_stride_two_on_stride_one_engine():
    out, report = rewrite_and_compare(conv_model(cin=4, cout=6, strides=(2, 2),
                                                 pads=(1, 1, 1, 1), spatial=(9, 8)), K210ISH)
    assert report.records[0].pass_name == "stride"
    assert report.records[0].verify["bit_exact"]


def test_pointwise_stride_subsamples_input():
    out, report = rewrite_and_compare(conv_model(cin=4, cout=6, kernel=(1, 1), strides=(2, 2),
                                                 spatial=(9, 8)), K210ISH)
    assert "input subsampled" in report.records[0].rewrite
    assert report.records[0].macs_after == report.records[0].macs_before


def test_seven_by_seven_stem_on_k210_like_engine():
    model = conv_model(cin=3, cout=8, kernel=(7, 7), strides=(2, 2), pads=(3, 3, 3, 3),
                       spatial=(20, 18))
    out, report = rewrite_and_compare(model, K210ISH)
    assert {r.pass_name for r in report.records} == {"stride", "kernel_split", "padding"}
    assert op_count(out, "Conv") == 9


def test_auto_pad_same_is_resolved():
    rewrite_and_compare(conv_model(cin=4, cout=4, kernel=(3, 3), auto_pad="SAME_UPPER",
                                   strides=(2, 2), spatial=(8, 7)), K210ISH)


def test_one_dimensional_and_three_dimensional_kernels():
    target = {"name": "k3", "conv": {"max_kernel": 3, "max_stride": 1, "max_pad": 1}}
    rewrite_and_compare(conv_model(cin=3, cout=5, kernel=(7,), strides=(2,), pads=(3, 2),
                                   spatial=(30,)), target)
    rewrite_and_compare(conv_model(cin=2, cout=3, kernel=(5, 3, 4), pads=(2, 1, 0, 2, 1, 3),
                                   spatial=(7, 6, 8)), target)


@pytest.mark.parametrize("form", ["qdq_channel", "constant"])
def test_weight_forms_in_kernel_split(form):
    rewrite_and_compare(conv_model(cin=4, cout=6, kernel=(5, 5), pads=(2, 2, 2, 2),
                                   weight_form=form, spatial=(9, 9)), K210ISH)


# An engine without Add: the per-tap form (which sums its taps) cannot be built.
NO_ADD = ["Conv", "Relu", "Pad", "Reshape", "Transpose", "Slice", "Concat", "Split"]


def test_dilation_space_to_batch_by_cost():
    model = conv_model(cin=64, cout=64, kernel=(3, 3), dilations=(6, 6), pads=(6,) * 4,
                       spatial=(24, 24))
    target = {"name": "nodil", "conv": {"max_dilation": 1}, "ops": NO_ADD}
    out, report = rewrite_and_compare(model, target)
    assert report.records[0].rewrite.startswith("space-to-batch: 36 sub-images")
    assert "per-tap: the target's ops list lacks Add" in report.records[0].rewrite
    assert op_count(out, "Transpose") == 2
    # at dilation 2 moving the layout costs more than the zeros: dense is chosen
    small = conv_model(cin=64, cout=64, kernel=(3, 3), dilations=(2, 2), pads=(2,) * 4,
                       spatial=(24, 24))
    out, report = rewrite_and_compare(small, target)
    assert "dense 5x5" in report.records[0].rewrite
    # where Add runs, one 1x1 conv per tap beats both (MACs x1, a Slice per tap)
    out, report = rewrite_and_compare(small, {"name": "nodil", "conv": {"max_dilation": 1}})
    record = report.records[0]
    assert record.pass_name == "dilation_taps" and record.rewrite.startswith("per-tap: 9")
    assert "dense x2.78" in record.rewrite and record.macs_after == record.macs_before
    assert op_count(out, "Conv") == 9 and op_count(out, "Slice") == 9


def test_dilation_dense_when_batch_is_limited():
    model = conv_model(cin=4, cout=4, kernel=(3, 3), dilations=(2, 3), pads=(2, 3, 2, 3),
                       spatial=(10, 11))
    out, report = rewrite_and_compare(model, {"name": "nodil", "conv": {"max_dilation": 1,
                                                                         "max_batch": 1}})
    record = report.records[0]
    assert "dense 5x7" in record.rewrite and "batch of 6" in record.rewrite
    assert record.verify["bit_exact"]


def test_dilation_keeps_what_the_engine_dilates():
    model = conv_model(cin=64, cout=64, kernel=(3, 3), dilations=(12, 12), pads=(12,) * 4,
                       spatial=(40, 40))
    out, report = rewrite_and_compare(model, {"name": "dil2", "conv": {"max_dilation": 2},
                                              "ops": NO_ADD})
    assert report.records[0].rewrite.startswith("space-to-batch: 36 sub-images")
    assert report.records[0].verify["passed"]


def test_grouped_dilated_kernel_split():
    target = {"name": "k3", "conv": {"max_kernel": 3}}
    rewrite_and_compare(conv_model(cin=8, cout=8, groups=4, kernel=(5, 5), dilations=(2, 1),
                                   pads=(1, 2, 3, 0), spatial=(12, 9)), target)


@st.composite
def geometry_case(draw):
    rank = draw(st.sampled_from([1, 2, 2, 2, 3]))
    groups = draw(st.sampled_from([1, 1, 2]))
    kernel = tuple(draw(st.integers(1, 7 if rank < 3 else 4)) for _ in range(rank))
    strides = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(2 * rank))
    spatial = tuple(max(1, (k - 1) * d + 1 - pads[i] - pads[i + rank]) + draw(st.integers(0, 6))
                    for i, (k, d) in enumerate(zip(kernel, dilations)))
    model = conv_model(cin=2 * groups, cout=3 * groups, groups=groups, kernel=kernel,
                       strides=strides, dilations=dilations, pads=pads, spatial=spatial,
                       weight_form=draw(st.sampled_from(["initializer", "qdq_channel"])),
                       seed=draw(st.integers(0, 99)))
    conv = {"max_stride": draw(st.sampled_from([None, 1, 2, 3]))}
    if draw(st.booleans()):
        conv.update(max_pad=1, same_pad_only=True, symmetric_pad=True, max_dilation=1,
                    kernel_shapes=[[1] * rank, [3] * rank])
    else:
        conv.update(max_kernel=draw(st.sampled_from([None, 1, 2, 3])),
                    max_dilation=draw(st.sampled_from([None, 1])),
                    max_pad=draw(st.sampled_from([None, 0, 1, 2])),
                    symmetric_pad=draw(st.booleans()))
    return model, {"name": "random", "conv": conv,
                   "rewrite": {"accumulate": draw(st.sampled_from(["chain", "tree"]))}}


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(geometry_case())
def test_geometry_property(case):
    model, target = case
    rewrite_and_compare(model, target)


NO_TRANSPOSE = {"name": "no-deconv", "conv": {"transposed": False}}


@pytest.mark.parametrize("kernel,strides,pads,output_padding", [
    ((4, 4), (2, 2), (1, 1, 1, 1), None),          # DCGAN generator layer
    ((2, 2), (2, 2), (0, 0, 0, 0), None),          # U-Net up-conv
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),        # "same" upsampling with output_padding
    ((3, 3), (1, 1), (0, 1, 2, 1), None),          # stride 1: one phase, no interleave
    ((5,), (3,), (2, 1), (1,)),                    # 1-D
])
def test_conv_transpose_sub_pixel(kernel, strides, pads, output_padding):
    model = conv_model(op="ConvTranspose", cin=4, cout=6, kernel=kernel, strides=strides,
                       pads=pads, output_padding=output_padding, spatial=(5,) * len(kernel))
    out, report = rewrite_and_compare(model, NO_TRANSPOSE)
    assert op_count(out, "ConvTranspose") == 0
    assert "sub-pixel" in report.records[0].rewrite
    assert report.records[0].macs_after <= report.records[0].macs_before


def test_transposed_stride_limit():
    model = conv_model(op="ConvTranspose", cin=4, cout=4, kernel=(3, 3), strides=(3, 3),
                       spatial=(4, 4))
    out, report = rewrite_and_compare(model, {"name": "u55ish",
                                              "conv": {"transposed_strides": [1, 2]}})
    assert op_count(out, "ConvTranspose") == 0
    # the Ethos-U55 preset lists no DepthToSpace: the phases are interleaved by Reshape +
    # Concat instead (zero insertion would cost 9x the MACs), and nothing above 4-D is made
    out, report = rewrite_and_compare(model, "ethos-u55")
    assert report.records[0].rewrite.startswith("sub-pixel: 9 phase convs")
    assert "Reshape + Concat" in report.records[0].rewrite
    assert "zero insertion: 9x the MACs" in report.records[0].rewrite
    assert op_count(out, "DepthToSpace") == 0
    assert emitted_within(model, out, "ethos-u55") == []


@st.composite
def transposed_case(draw):
    rank = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 1, 2]))
    stride = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(stride, stride + 3)) for _ in range(rank))
    strides = (stride,) * rank
    pads = tuple(draw(st.integers(0, k - 1)) for k in kernel * 2)
    output_padding = tuple(draw(st.integers(0, stride - 1)) for _ in range(rank))
    size = draw(st.integers(2, 6))
    for d in range(rank):       # the original must have an output at all
        assume((size - 1) * stride + kernel[d] - pads[d] - pads[d + rank] + output_padding[d] > 0)
    model = conv_model(op="ConvTranspose", cin=2 * groups, cout=3 * groups, groups=groups,
                       kernel=kernel, strides=strides, pads=pads,
                       output_padding=output_padding, spatial=(size,) * rank,
                       weight_form=draw(st.sampled_from(["initializer", "constant",
                                                         "qdq_tensor"])),
                       bias=draw(st.booleans()), seed=draw(st.integers(0, 99)))
    return model


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(transposed_case(), st.sampled_from(["auto", "zero_insertion"]))
def test_transposed_property(model, form):
    rewrite_and_compare(model, {**NO_TRANSPOSE, "rewrite": {"transposed_form": form}})


@pytest.mark.parametrize("kernel,strides,dilations,pads", [
    ((3, 3), (2, 2), (2, 2), (1, 1, 1, 1)),            # dilated: no sub-pixel form
    ((2, 2), (3, 3), (1, 1), (0, 0, 0, 0)),            # kernel < stride: phases without taps
    ((3, 3, 3), (3, 2, 2), (2, 1, 1), (1,) * 6),       # 3-D, dilated
])
def test_zero_insertion_where_sub_pixel_cannot(kernel, strides, dilations, pads):
    model = conv_model(op="ConvTranspose", cin=3, cout=4, kernel=kernel, strides=strides,
                       dilations=dilations, pads=pads, spatial=(4,) * len(kernel))
    out, report = rewrite_and_compare(model, {**NO_TRANSPOSE, "max_tensor_rank": 2 + len(kernel)})
    assert report.records[0].rewrite.startswith("zero insertion")
    assert emitted_within(model, out, {**NO_TRANSPOSE, "max_tensor_rank": 2 + len(kernel)}) == []


@pytest.mark.parametrize("kernel,strides,pads", [
    ((3, 3), (2, 3), (1, 0, 1, 2)),                    # unequal strides
    ((3, 3, 3), (2, 2, 2), (1,) * 6),                  # 3-D
])
def test_sub_pixel_by_reshape_where_depth_to_space_cannot(kernel, strides, pads):
    model = conv_model(op="ConvTranspose", cin=3, cout=4, kernel=kernel, strides=strides,
                       pads=pads, spatial=(4,) * len(kernel))
    target = {**NO_TRANSPOSE, "max_tensor_rank": 2 + len(kernel)}
    out, report = rewrite_and_compare(model, target)
    assert report.records[0].rewrite.startswith("sub-pixel")
    assert "Reshape + Concat" in report.records[0].rewrite
    assert emitted_within(model, out, target) == []


def test_tiling_large_feature_map_on_k210():
    model = conv_model(cin=4, cout=4, kernel=(3, 3), pads=(1, 1, 1, 1), spatial=(600, 520))
    out, report = rewrite_and_compare(model, "k210")
    tiling = [r for r in report.records if r.pass_name == "tiling"]
    assert tiling and tiling[0].rewrite.startswith("3 tiles on axis 2 x 2 tiles on axis 3")
    assert tiling[0].verify["bit_exact"]


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2),
       st.integers(20, 70), st.integers(8, 24), st.sampled_from([1, 2]))
def test_tiling_property(k, stride, dilation, pad, size, limit, rank):
    span = (k - 1) * dilation + 1
    assume(limit >= span + stride and size + 2 * pad >= span and size > limit)
    model = conv_model(cin=3, cout=2, kernel=(k,) * rank, strides=(stride,) * rank,
                       dilations=(dilation,) * rank, pads=(pad,) * (2 * rank),
                       spatial=(size,) * rank)
    bounds = {"input_width": [1, limit]}
    if rank == 2:
        bounds["input_height"] = [1, limit]
    out, report = rewrite_and_compare(model, {"name": "tiles", "conv": bounds})
    assert report.records and report.records[0].pass_name == "tiling"


@pytest.mark.parametrize("form", ["initializer", "qdq_channel"])
def test_stride_by_space_to_depth_when_cheaper(form):
    """A 7x7 stride-2 stem on a stride-1, 3x3-only engine: folding the stride into channels
    (4x4 taps over 12 channels) beats running at stride 1 and splitting a 7x7 kernel."""
    model = conv_model(cin=3, cout=64, kernel=(7, 7), strides=(2, 2), pads=(3, 3, 3, 3),
                       spatial=(64, 60), weight_form=form)
    out, report = rewrite_and_compare(model, K210ISH)
    stride = next(r for r in report.records if r.pass_name == "stride")
    assert stride.rewrite.startswith("space-to-depth 2: 4x4 conv")
    assert op_count(out, "SpaceToDepth") == 1


def test_stride_by_subsampling_when_cheaper():
    model = conv_model(cin=64, cout=64, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
                       spatial=(33, 32))
    out, report = rewrite_and_compare(model, K210ISH)
    assert "not space-to-depth" in report.records[0].rewrite


@pytest.mark.parametrize("attrs", [{"auto_pad": "SAME_UPPER"}, {"auto_pad": "SAME_LOWER"},
                                   {"output_shape": [11, 12]},
                                   {"output_shape": [10, 10], "auto_pad": "SAME_UPPER"}])
def test_conv_transpose_output_shape_and_auto_pad(attrs):
    model = conv_model(op="ConvTranspose", cin=4, cout=6, kernel=(3, 3), strides=(2, 2),
                       spatial=(5, 6))
    for key, value in attrs.items():
        model.graph.node[-1].attribute.append(onnx.helper.make_attribute(key, value))
    model.graph.output[0].type.tensor_type.ClearField("shape")
    out, report = rewrite_and_compare(model, NO_TRANSPOSE)
    assert op_count(out, "ConvTranspose") == 0


def test_undersized_maps_grow_to_the_engine_minimum():
    """A squeeze-excite 1x1 conv on a 1x1 map, on the K210 (inputs of at least 4x4)."""
    model = conv_model(cin=16, cout=8, kernel=(1, 1), spatial=(1, 1))
    out, report = rewrite_and_compare(model, "k210")
    assert "grown" in report.records[0].rewrite


def test_blow_ups_decline_with_a_reason():
    """Dilation 40 on a batch-1 engine: the dense kernel is too big and space-to-batch too wide,
    and each says so; the per-tap form lowers it, and where it cannot (no Add) all three
    reasons reach the report."""
    model = conv_model(cin=512, cout=512, kernel=(3, 3), dilations=(40, 40), pads=(40,) * 4,
                       spatial=(100, 100))
    conv = {"max_dilation": 1, "max_batch": 1}
    out, report = cr.rewrite(model, {"name": "nodil", "conv": conv}, verify=False)
    assert report.status == "ok"
    rewrite = report.records[0].rewrite
    assert rewrite.startswith("per-tap") and "would hold" in rewrite and "batch of 1600" in rewrite
    out, report = cr.rewrite(model, {"name": "nodil", "conv": conv, "ops": NO_ADD}, verify=False)
    assert report.status == "illegal"
    reasons = " ".join(report.remaining[0].reasons)
    assert "would hold" in reasons and "batch of 1600" in reasons and "lacks Add" in reasons
