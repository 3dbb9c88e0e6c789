"""Integer convs (QLinearConv, ConvInteger) through the geometry lowerings: stride (subsample),
padding (a Pad with the input zero point), kernel split (int32 ConvInteger partial sums, one
requantisation) and tiling, each rewrite run on onnxruntime and required to equal the conv's ONNX
semantics computed here in int64 (``integer_models.exact_integer_conv``) bit for bit; what is
not built for integer convs declines with its reason; a ResNet-like net quantized by
onnxruntime's quantize_static (QOperator) goes through the command line on k210."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

import convrewrite as cr
from convrewrite.build.onnx_read import spec_of
from convrewrite.conv import CONV_OPS
from convrewrite.gs_graph import to_graph
from convrewrite.legality import check
from convrewrite.target import load_target
from convrewrite.verify import session
from tests.lowerings.integer_models import exact_integer_conv, integer_conv, random_input
from tests.lowerings.qoperator_nets import quantized, resnet_like

CASES = {
    "qlinear-u8s8-bias": dict(op="QLinearConv", bias=True),
    "qlinear-u8u8-perch-zps": dict(op="QLinearConv", w_dtype=np.uint8, per_channel=True,
                                   varying_zero_points=True, bias=True),
    "qlinear-s8s8-perch": dict(op="QLinearConv", x_dtype=np.int8, per_channel=True),
    "convinteger-u8s8": dict(op="ConvInteger"),
    "convinteger-u8u8": dict(op="ConvInteger", w_dtype=np.uint8),
}
SAME_PAD = {"max_pad": 1, "symmetric_pad": True, "same_pad_only": True}
FORMS = {   # geometry, the target's conv rules, the passes that must have rewritten it
    "stride-3x3": (dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)), {"max_stride": 1},
                   {"stride"}),
    "stride-1x1": (dict(kernel=(1, 1), strides=(2, 2)), {"max_stride": 1}, {"stride"}),
    "pad-explicit": (dict(kernel=(3, 3), pads=(2, 1, 0, 1)), {"max_pad": 0}, {"padding"}),
    "pad-same-crop": (dict(kernel=(3, 3)), SAME_PAD, {"padding"}),
    "kernel-5x5": (dict(kernel=(5, 5), pads=(2, 2, 2, 2)), {"kernel_shapes": [[1, 1], [3, 3]]},
                   {"kernel_split"}),
    "kernel-7x7-s2": (dict(kernel=(7, 7), strides=(2, 2), pads=(3, 3, 3, 3), size=(14, 14)),
                      {"kernel_shapes": [[1, 1], [3, 3]], "max_stride": 1, **SAME_PAD},
                      {"stride", "kernel_split", "padding"}),
    # a 3x3 at dilation 2 spans 5x5; sub-kernels of at most 4 dilated taps: six 1x2 (or 2x1)
    "kernel-dilated-area": (dict(kernel=(3, 3), dilations=(2, 2), pads=(2, 2, 2, 2),
                                 size=(10, 10)), {"max_dilated_kernel_area": 4},
                            {"kernel_split"}),
    "tiles": (dict(kernel=(3, 3), pads=(1, 1, 1, 1), size=(12, 9)), {"input_height": [1, 5]},
              {"tiling"}),
}


def ops(model):
    return sorted(n.op_type for n in model.graph.node)


def assert_exact(model, out, report):
    assert report.status == "ok", [(r.node, r.reasons) for r in report.remaining]
    assert report.records and all(r.tolerance == "exact" and r.verify["bit_exact"]
                                  for r in report.records)
    x = random_input(model)
    got = session(out).run(None, {"x": x})[0]
    want = exact_integer_conv(model, x)
    assert got.dtype == want.dtype
    assert np.array_equal(got, want), f"max {np.abs(got.astype(int) - want).max()} LSB"
    assert np.array_equal(session(model).run(None, {"x": x})[0], want)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", CASES)
def test_geometry_lowerings_are_bit_exact(form, case):
    geometry, rules, passes = FORMS[form]
    params = CASES[case]
    model = integer_conv(params["op"], **geometry, **{k: v for k, v in params.items()
                                                      if k != "op"})
    out, report = cr.rewrite(model, {"name": "t", "conv": rules})
    assert {r.pass_name for r in report.records} == passes
    assert_exact(model, out, report)
    kinds = ops(out)
    if "kernel_split" in passes and params["op"] == "QLinearConv":
        # int32 partial sums, requantized once
        assert "QLinearConv" not in kinds and kinds.count("QuantizeLinear") == 1
        assert kinds.count("ConvInteger") >= 4
    else:
        assert params["op"] in kinds and "QuantizeLinear" not in kinds
    if form == "pad-explicit":      # padded with the input's zero point, the conv pads 0
        graph = out.graph
        pad = next(n for n in graph.node if n.op_type == "Pad")
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        zero = inits[next(n for n in model.graph.node).input[2]]
        assert len(pad.input) == 3 and inits[pad.input[2]] == zero and zero != 0


@pytest.mark.parametrize("geometry", [
    dict(kernel=(7, 7), strides=(2, 2), pads=(3, 3, 3, 3), size=(16, 16)),
    dict(kernel=(5, 5), strides=(2, 2), pads=(1, 2, 2, 1), size=(15, 16)),    # ends cropped
], ids=["7x7", "5x5-asymmetric"])
@pytest.mark.parametrize("case", ["qlinear-u8s8-bias", "qlinear-u8u8-perch-zps",
                                  "convinteger-u8u8"])
def test_space_to_depth_stride(geometry, case):
    """Where it is cheaper (48 output channels), the stride is folded into channels: the input
    padded with its zero point, SpaceToDepth, the kernel extended with the weight zero point and
    rearranged, the same op at stride 1; then the kernel split and padding lowerings; exact."""
    params = CASES[case]
    model = integer_conv(params["op"], cout=48, **geometry,
                         **{k: v for k, v in params.items() if k != "op"})
    rules = {"kernel_shapes": [[1, 1], [3, 3]], "max_stride": 1, **SAME_PAD}
    out, report = cr.rewrite(model, {"name": "t", "conv": rules})
    assert report.records[0].pass_name == "stride"
    assert report.records[0].rewrite.startswith("space-to-depth 2")
    assert "SpaceToDepth" in ops(out)
    assert_exact(model, out, report)


@pytest.mark.parametrize("case", ["qlinear-u8s8-bias", "qlinear-u8u8-perch-zps",
                                  "convinteger-u8s8"])
def test_batch_split_keeps_the_integer_op(case):
    """A batch of 3 on an engine that takes 1: three convs of the same op over a Split of the
    batch, joined by Concat; exact (before: 'batches are not split yet')."""
    params = CASES[case]
    model = integer_conv(params["op"], pads=(1, 1, 1, 1), batch=3,
                         **{k: v for k, v in params.items() if k != "op"})
    out, report = cr.rewrite(model, {"name": "t", "conv": {"max_batch": 1}})
    assert [r.pass_name for r in report.records] == ["batch"]
    assert ops(out).count(params["op"]) == 3 and "Concat" in ops(out)
    assert_exact(model, out, report)


@pytest.mark.parametrize("case, form", [
    ("qlinear-u8s8-bias", "block-diagonal groups"),        # weight zero point 0
    ("qlinear-s8s8-perch", "block-diagonal groups"),
    ("qlinear-u8u8-perch-zps", "per-group convs"),          # zero points 128 +- 4
    ("convinteger-u8s8", "block-diagonal groups"),
    ("convinteger-u8u8", "per-group convs"),
])
def test_groups_on_a_regular_only_engine(case, form):
    """A 3-group conv on an engine of regular convs only: chunks of the same op with their rows
    of the per-channel parameters; block-diagonal (zeros off the diagonal) only where the
    weight zero point is 0, else one conv per group; exact."""
    params = CASES[case]
    model = integer_conv(params["op"], pads=(1, 1, 1, 1), cin=12, cout=12, group=3,
                         **{k: v for k, v in params.items() if k != "op"})
    out, report = cr.rewrite(model, {"name": "t", "conv": {"groups": ["regular"]}})
    assert [r.pass_name for r in report.records] == ["groups"]
    assert form in report.records[0].rewrite
    assert_exact(model, out, report)
    assert {a.i for n in out.graph.node if n.op_type == params["op"] for a in n.attribute
            if a.name == "group"} == {1}


def test_kernel_split_extends_the_kernel_with_the_weight_zero_point():
    """5x5 -> 6x6 zero-extended (four 3x3 tiles): the extra taps hold w_zp (128 for uint8
    weights), so they add nothing although they read real inputs."""
    model = integer_conv("ConvInteger", kernel=(5, 5), w_dtype=np.uint8, size=(10, 10))
    out, report = cr.rewrite(model, {"name": "t", "conv": {"kernel_shapes": [[3, 3]]}})
    assert_exact(model, out, report)
    assert "4 3x3 sub-kernels (6x6 zero-extended" in report.records[0].rewrite
    taps = [numpy_helper.to_array(t) for t in out.graph.initializer if t.name.endswith(".w")]
    assert len(taps) == 4 and (taps[3][:, :, 2, :] == 128).all()


@pytest.mark.parametrize("op", ["QLinearConv", "ConvInteger"])
def test_a_1d_integer_conv_is_lifted_to_2d(op):
    """k210 takes 2-D convs only: a 1-D integer conv (kernel 3, pads 1) becomes the same op over
    a one-row map, padded and cropped for the K210's fixed padding; bit-exact."""
    model = integer_conv(op, kernel=(3,), strides=(1,), pads=(1, 1), dilations=(1,),
                         size=(16,), bias=op == "QLinearConv")
    out, report = cr.rewrite(model, "k210")
    assert report.status == "ok" and report.records[0].pass_name == "rank"
    assert all(r.tolerance == "exact" and r.verify["bit_exact"] for r in report.records)
    assert op in ops(out) and ops(out).count("Reshape") == 2
    x = random_input(model)
    assert np.array_equal(session(out).run(None, {"x": x})[0],
                          session(model).run(None, {"x": x})[0])


DILATION_OPS = ["Conv", "Pad", "Slice", "Add", "ConvInteger", "Cast", "Mul", "QuantizeLinear",
                "Sub"]


@pytest.mark.parametrize("form, dense, ops_list, passes, words", [
    ("dense", True, None, ["dilation"], "dense 9x9 with zeros"),
    ("space-to-batch", False, None, ["dilation"], "space-to-batch: 16 sub-images"),
    ("per-tap", False, DILATION_OPS, ["dilation_taps"], "per-tap: 9 1x1 convs"),
])
@pytest.mark.parametrize("case", ["qlinear-u8s8-bias", "qlinear-u8u8-perch-zps",
                                  "convinteger-u8u8"])
def test_dilation_forms_are_bit_exact(monkeypatch, form, dense, ops_list, passes, words, case):
    """Each of the three dilation forms on an integer conv: the dense kernel's holes hold the
    weight zero point, space-to-batch pads with the input zero point, per-tap sums int32
    partial sums (one requantisation). The dense form is the cheapest on this map, so it is
    switched off to reach the other two; the per-tap one on a target without Reshape."""
    import convrewrite.plan.dilation as plan_dilation
    from convrewrite.decline import Decline
    if not dense:
        monkeypatch.setattr(plan_dilation, "plan_dilation",
                            lambda spec, target: Decline("switched off by the test"))
    params = CASES[case]
    model = integer_conv(params["op"], dilations=(4, 4), pads=(4, 4, 4, 4), size=(16, 16),
                         **{k: v for k, v in params.items() if k != "op"})
    target = {"name": "t", "conv": {"max_dilation": 1}}
    if ops_list:
        target["ops"] = ops_list
    out, report = cr.rewrite(model, target)
    assert [r.pass_name for r in report.records] == passes
    assert words in report.records[0].rewrite
    assert_exact(model, out, report)


def test_depthwise_kernel_split_and_what_is_not_built_declines():
    """A depthwise QLinearConv (one weight zero point) is kernel-split exactly; one whose
    per-channel zero points differ would need each group's window sums centred: declined, with
    the reason."""
    kinds = {"name": "t", "conv": {"kernel_shapes": [[1, 1], [3, 3]]}}
    model = integer_conv("QLinearConv", kernel=(5, 5), pads=(2, 2, 2, 2), cin=6, cout=6,
                         group=6, per_channel=True, bias=True)
    out, report = cr.rewrite(model, kinds)
    assert report.status == "ok" and report.records[0].verify["bit_exact"]
    x = random_input(model)
    assert np.array_equal(session(out).run(None, {"x": x})[0],
                          session(model).run(None, {"x": x})[0])
    varying = integer_conv("QLinearConv", kernel=(5, 5), pads=(2, 2, 2, 2), cin=6, cout=6,
                           group=6, w_dtype=np.uint8, per_channel=True,
                           varying_zero_points=True)
    _, report = cr.rewrite(varying, kinds)
    assert report.status == "illegal" and any(
        "kernel split of a grouped QLinearConv whose weight zero points differ" in why
        for r in report.remaining for why in r.reasons)


def test_what_is_not_built_for_integer_convs_declines_with_its_reason():
    volume = integer_conv("ConvInteger", kernel=(3, 3, 3), strides=(1, 1, 1), pads=(1,) * 6,
                          dilations=(1, 1, 1), size=(4, 6, 6))
    _, report = cr.rewrite(volume, "k210")
    assert report.status == "illegal" and any(
        "rank: a 3-D ConvInteger's depth taps would be summed: not built for integer convs" in why
        for r in report.remaining for why in r.reasons)
    # a kernel split of a QLinearConv needs the requantizing ops: k210's list lacks them
    stem = integer_conv("QLinearConv", kernel=(7, 7), strides=(2, 2), pads=(3, 3, 3, 3),
                        size=(14, 14))
    _, report = cr.rewrite(stem, "k210")
    assert report.status == "illegal" and [r.pass_name for r in report.records] == ["stride"]
    assert "subsampled" in report.records[0].rewrite
    assert any("kernel split of a QLinearConv sums int32 partial sums and requantizes them "
               "once: the target's ops list lacks Cast, ConvInteger, QuantizeLinear" in why
               for r in report.remaining for why in r.reasons)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=st.sampled_from(["QLinearConv", "ConvInteger"]), k=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]), pad=st.integers(0, 2), size=st.integers(5, 9),
       uint8_weight=st.booleans(),
       rules=st.sampled_from([{"max_stride": 1}, {"max_pad": 0},
                              {"kernel_shapes": [[1, 1], [3, 3]]},
                              {"kernel_shapes": [[1, 1], [3, 3]], "max_stride": 1, **SAME_PAD}]))
def test_property_integer_geometry_is_bit_exact(op, k, stride, pad, size, uint8_weight, rules):
    model = integer_conv(op, kernel=(k, k), strides=(stride, stride), pads=(pad, 0, pad, pad),
                         size=(size, size + 1), w_dtype=np.uint8 if uint8_weight else np.int8,
                         per_channel=op == "QLinearConv", varying_zero_points=uint8_weight,
                         bias=op == "QLinearConv", cin=3, cout=4, seed=size)
    out, report = cr.rewrite(model, {"name": "t", "conv": rules})
    if not report.records and report.status == "ok":
        return                                  # already legal
    assert_exact(model, out, report)


def _k210_with_requantizing_ops(folder):
    """k210 whose ops list also has what a QLinearConv's kernel split emits."""
    extra = sorted(set(load_target("k210").ops) | {"ConvInteger", "Cast", "QuantizeLinear"})
    path = folder / "k210q.yaml"
    path.write_text("name: k210q\nextends: k210\nops: [" + ", ".join(extra) + "]\n")
    return path


@pytest.mark.parametrize("stem, target, code", [(3, "k210", 0), (7, "k210q", 0),
                                                (7, "k210", 3)])
def test_quantize_static_qoperator_net_on_k210(tmp_path, stem, target, code):
    """A ResNet-like float net quantized by onnxruntime (QOperator, uint8 x int8): its stride-2
    convs, 1x1 stride-2 shortcut, unpadded 3x3 and (stem 7) 7x7 stride-2 stem all lowered,
    every conv of the result legal, end to end bit-exact. Before: exit 3 (the geometry passes
    took only Conv)."""
    from tests.robustness.harness import run_cli, write_model
    write_model(tmp_path, "in.onnx", quantized(resnet_like(stem), tmp_path))
    chip = str(_k210_with_requantizing_ops(tmp_path)) if target == "k210q" else target
    r = run_cli(["in.onnx", "--target", chip, "-o", "out.onnx", "--report", "r.json"], tmp_path)
    assert r.code == code, r.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    if code == 3:
        reasons = " ".join(w for r in data["remaining"] for w in r["reasons"])
        assert "lacks Cast, ConvInteger, QuantizeLinear" in reasons
        return
    assert data["rewrites"] and all(rec["tolerance"] == "exact" and rec["verify"]["bit_exact"]
                                    for rec in data["rewrites"])
    assert data["end_to_end"]["bit_exact"]
    rules = load_target(chip)
    convs = [n for n in to_graph(onnx.load(tmp_path / "out.onnx")).nodes if n.op in CONV_OPS]
    assert convs and all(check(spec_of(n), rules) == [] for n in convs)
    assert {n.op for n in convs} == ({"QLinearConv"} if stem == 3 else
                                     {"QLinearConv", "ConvInteger"})
