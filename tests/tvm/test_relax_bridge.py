"""Each per-conv lowering as a Relax pass against the same ONNX pass on onnxruntime.

For every case one ONNX pass rewrites a one-conv model (run on onnxruntime) and the Relax pass of
the same name rewrites the model imported into Relax (built and run on TVM's CPU): the results
must agree, the Relax module must have as many convs as the ONNX one, and no conv it keeps may
break the rule the pass fixes."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from convrewrite.passes import DEFAULT_PASSES  # noqa: E402
from convrewrite.pipeline import rewrite_model  # noqa: E402
from convrewrite.target import load_target  # noqa: E402
from convrewrite.tvm.build import build, import_onnx  # noqa: E402
from convrewrite.tvm.run import run_executable  # noqa: E402
from convrewrite.tvm.relax_bridge import (  # noqa: E402
    Lower, LoweringLog, lowering_pass, violations_in)
from tests.conv_cases import conv_model, op_count, random_input, run  # noqa: E402


def relax_convs(mod) -> int:
    from tvm import relax
    count = [0]

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "").startswith("relax.nn.conv"):
            count[0] += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return count[0]


def relax_run(mod, feeds):
    return run_executable(build(mod, "llvm", schedules=False), "llvm", list(feeds.values()))[0]


def assert_close(got, want):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, atol=3e-5 * scale, rtol=1e-4)


CONV = {"name": "t", "conv": {}}
CASES = [
    # pass name, target conv rules, conv_model arguments
    ("rank", {"spatial_ranks": [2]},
     dict(cin=6, cout=8, kernel=(3, 3, 3), spatial=(5, 6, 6), pads=[1] * 6)),
    ("rank", {"spatial_ranks": [2]}, dict(cin=6, cout=8, kernel=(5,), spatial=(20,), pads=[2, 2])),
    ("groups", {"groups": ["regular"]}, dict(cin=16, cout=16, groups=4, pads=[1] * 4)),
    ("depth_multiplier", {"max_depth_multiplier": 1},
     dict(cin=8, cout=16, groups=8, pads=[1] * 4)),
    ("channel_split", {"max_in_channels": 16}, dict(cin=40, cout=8, pads=[1] * 4)),
    ("dead_taps", {"max_dilation": 1},
     dict(cin=8, cout=4, dilations=(36, 36), spatial=(6, 6), pads=[36] * 4)),
    ("transposed", {"transposed": False},
     dict(op="ConvTranspose", cin=8, cout=6, kernel=(4, 4), strides=(2, 2), pads=[1] * 4)),
    ("transposed", {"transposed": False},
     dict(op="ConvTranspose", cin=8, cout=6, kernel=(3, 3), strides=(2, 2), pads=[1] * 4,
          output_padding=(1, 1))),
    ("transposed", {"transposed": False},
     dict(op="ConvTranspose", cin=4, cout=6, kernel=(3,), strides=(2,), spatial=(10,))),
    ("stride", {"max_stride": 1},
     dict(cin=8, cout=8, strides=(2, 2), spatial=(16, 16), pads=[1] * 4)),
    ("dilation", {"max_dilation": 1},
     dict(cin=8, cout=8, dilations=(3, 3), spatial=(16, 16), pads=[3] * 4)),
    ("kernel_split", {"max_kernel": 3}, dict(cin=4, cout=8, kernel=(7, 7), spatial=(14, 14),
                                             pads=[3] * 4)),
    ("padding", {"max_pad": 0}, dict(cin=4, cout=8, pads=[1, 2, 1, 0], spatial=(9, 9))),
    ("tiling", {"input_height": [1, 8], "input_width": [1, 8]},
     dict(cin=4, cout=8, spatial=(20, 20), pads=[1] * 4)),
]


@pytest.mark.parametrize("pass_name,rules,conv", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_relax_pass_equals_onnx_pass(pass_name, rules, conv):
    relax_equals_onnx(pass_name, load_target({"name": "t", "conv": rules}), conv)


NO_SLICE = ["Conv", "Relu", "Split", "Concat", "Pad", "Add"]


@pytest.mark.parametrize("pass_name,rules,conv", [
    ("tiling", {"input_height": [1, 8], "input_width": [1, 8]},
     dict(cin=4, cout=8, spatial=(20, 20), pads=[1] * 4)),
    ("tiling", {"input_width": [1, 12]},
     dict(cin=2, cout=4, kernel=(5,), strides=(2,), spatial=(40,), pads=[2, 2])),
    ("kernel_split", {"max_kernel": 3}, dict(cin=4, cout=8, kernel=(7, 7), spatial=(14, 14),
                                             pads=[3] * 4))])
def test_relax_pass_without_slice_equals_onnx_pass(pass_name, rules, conv):
    """Split + Concat windows (no Slice in the target's ops) come to Relax the same way."""
    relax_equals_onnx(pass_name, load_target({"name": "t", "conv": rules, "ops": NO_SLICE}),
                      conv)


def relax_equals_onnx(pass_name, target, conv):
    model = conv_model(**conv)
    onnx_pass = next(p for p in DEFAULT_PASSES if p.name == pass_name)
    onnx_out_model, result = rewrite_model(model, target, (onnx_pass,), graph_passes=())
    assert [r.pass_name for r in result.records] == [pass_name] and not result.remaining
    feeds = random_input(model)
    want = run(onnx_out_model, feeds)[0]

    mod = import_onnx(model, feeds)
    log = LoweringLog()
    lowered = lowering_pass(pass_name, target, log)(mod)
    assert len(log.rewritten) == 1 and not log.kept, log
    records = log.relax.records        # bridged or native, each rewrite a verified Record
    assert records and all(r.verify is not None and r.verify["passed"] for r in records)
    rules_fixed = onnx_pass.fixes
    assert violations_in(mod, target, rules_fixed) and not violations_in(lowered, target,
                                                                         rules_fixed)
    assert relax_convs(lowered) == op_count(onnx_out_model, "Conv") \
        + op_count(onnx_out_model, "ConvTranspose")
    assert_close(relax_run(lowered, feeds), want)


NETS = [("deeplab_head", "k210"), ("dcgan_generator", "k210"), ("unet", "nvdla"),
        ("big_kernel_net", "ethos-u55"), ("conv3d_net", "generic"), ("conv1d_net", "k210")]


@pytest.mark.parametrize("net,preset", NETS)
def test_lower_makes_a_demo_net_legal_like_the_cli(net, preset):
    """The whole per-conv pipeline in Relax: legal on the preset, equal to the ONNX rewrite."""
    from convrewrite.models import geometry_nets, small
    model = getattr(geometry_nets, net, None) or getattr(small, net)
    model = model()
    target = load_target(preset)
    feeds = random_input(model)
    onnx_out_model, result = rewrite_model(model, target)
    assert not result.remaining
    mod = import_onnx(model, feeds)
    assert violations_in(mod, target)
    lowered = Lower(target)(mod)
    assert not violations_in(lowered, target)
    assert_close(relax_run(lowered, feeds), run(onnx_out_model, feeds)[0])


def test_one_hot_depthwise_takes_the_shift_form_the_onnx_pipeline_picks():
    from convrewrite.models.variants import shift_resnet
    model = shift_resnet(form="depthwise")
    target = load_target({"name": "t", "conv": {"groups": ["regular"]}})
    feeds = random_input(model)
    onnx_out_model, result = rewrite_model(model, target)
    assert any(r.pass_name == "shift" for r in result.records)
    mod = import_onnx(model, feeds)
    log = LoweringLog()
    lowered = Lower(target, log)(mod)
    assert any("shift:" in line for line in log.rewritten)
    assert not violations_in(lowered, target)
    assert_close(relax_run(lowered, feeds), run(onnx_out_model, feeds)[0])


def test_a_conv_no_pass_can_fix_is_kept_and_said_why():
    target = load_target({"name": "t", "conv": {"dtypes": ["int8"]}})
    model = conv_model()
    mod = import_onnx(model, random_input(model))
    log = LoweringLog()
    lowered = Lower(target, log)(mod)
    assert relax_convs(lowered) == 1 and log.kept and not log.rewritten
    assert log.kept == ["Conv 8->8 k3x3: no lowering fixes rule dtypes"], log.kept


def test_an_unknown_pass_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="dilation.*rank"):
        lowering_pass("dilate", "k210")


def test_rewrite_runs_shuffle_removal_then_lower():
    from convrewrite.models.variants import shufflenet_v2
    from convrewrite.tvm.relax_bridge import Rewrite
    model = shufflenet_v2(image_size=64, repeats=(1, 1, 1))
    target = load_target({"name": "t", "max_tensor_rank": 4, "conv": {"groups": ["regular"]}})
    feeds = random_input(model)
    onnx_out, result = rewrite_model(model, target)
    assert not result.remaining
    log = LoweringLog()
    lowered = Rewrite(target, log)(import_onnx(model, feeds))
    assert any(line.startswith("shuffle at") for line in log.rewritten)
    assert any("groups:" in line for line in log.rewritten)
    assert not violations_in(lowered, target)
    assert_close(relax_run(lowered, feeds), run(onnx_out, feeds)[0])


def test_a_wrong_bridged_piece_is_caught(monkeypatch):
    """The bridge's check is not vacuous: a piece TVM imported 1% off (the original conv with
    its weight scaled, in place of the shift rewrite) fails its records, though the ONNX rewrite
    itself is right. The shift pass is the one rewrite still bridged: every conv lowering runs
    natively (a monkeypatched bridge would see none of them)."""
    import onnx
    from onnx import numpy_helper
    from tvm.relax.frontend.onnx import from_onnx

    from convrewrite.models.variants import shift_resnet
    from convrewrite.tvm import relax_bridge
    real = relax_bridge.lower_model

    def wrong(model, call, *args):
        bridged = real(model, call, *args)
        if not hasattr(bridged, "piece"):
            return bridged
        bad = onnx.ModelProto()
        bad.CopyFrom(model)
        weight = bad.graph.initializer[0]
        weight.CopyFrom(numpy_helper.from_array(
            numpy_helper.to_array(weight) * np.float32(1.01), weight.name))
        shape = [d.dim_value for d in bad.graph.input[0].type.tensor_type.shape.dim]
        bridged.piece = from_onnx(bad, shape_dict={"x": shape}, keep_params_in_input=False)
        return bridged

    monkeypatch.setattr(relax_bridge, "lower_model", wrong)
    model = shift_resnet(form="depthwise")
    log = LoweringLog()
    Lower(load_target({"name": "t", "conv": {"groups": ["regular"]}}), log)(
        import_onnx(model, random_input(model)))
    shifts = [r for r in log.relax.records if r.pass_name == "shift"]
    assert shifts and all(not r.verify["passed"] for r in shifts)
    assert log.relax.report().status == "mismatch"
