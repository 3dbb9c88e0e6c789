"""Real architectures (programmatic ONNX of ResNet-50, VGG-16, MobileNetV2, 1-D/3-D nets) rewritten
for every preset: every channel limit met, every rewrite and the whole model verified."""

from __future__ import annotations

import pytest

import convrewrite as cr
from convrewrite.models import conv1d_net, conv3d_net, demo_wide, mobilenet_v2, resnet50, vgg16
from convrewrite.target import preset_names

CHANNEL_RULES = {"max_in_channels", "max_out_channels"}

MODELS = {
    "resnet50": lambda: resnet50(image_size=224),
    "vgg16": lambda: vgg16(image_size=64),
    "mobilenet_v2": lambda: mobilenet_v2(image_size=96),
    "demo_wide": demo_wide,
    "conv1d_net": conv1d_net,
    "conv3d_net": conv3d_net,
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return request.param, MODELS[request.param]()


@pytest.mark.parametrize("preset", preset_names())
def test_rewrite_for_preset(model, preset):
    name, original = model
    out, report = cr.rewrite(original, preset)
    assert report.status in ("ok", "illegal"), report.render()
    assert not report.mismatches, report.render()
    for remaining in report.remaining:          # whatever remains is a rule no pass owns yet
        assert not {v.rule for v in remaining.violations} & CHANNEL_RULES, report.render()
        assert remaining.reasons
    if report.records:
        assert report.end_to_end["passed"]
        assert all(r.verify["passed"] for r in report.records)
    legality = cr.check(out, preset)
    assert not [r for r in legality.remaining
                if {v.rule for v in r.violations} & CHANNEL_RULES]


def test_resnet50_becomes_fully_legal_for_k210():
    out, report = cr.rewrite(resnet50(image_size=224), "k210")
    assert report.status == "ok", report.render()          # nothing left the K210 rejects
    split = [r for r in report.records if r.pass_name == "channel_split"]
    assert len(split) >= 4          # the 2048-channel convs of the last stage
    assert all(v.limit == 1024 for r in split for v in r.rules)
    passes = {r.pass_name for r in report.records}
    assert passes == {"channel_split", "stride", "kernel_split", "padding"}
    assert not cr.check(out, "k210").remaining


def test_dynamic_batch_resnet(tmp_path):
    model = resnet50(image_size=64, dynamic_batch=True)
    out, report = cr.rewrite(model, {"conv": {"max_in_channels": 512, "max_out_channels": 512}},
                             input_shapes={model.graph.input[0].name: (2, 3, 64, 64)})
    assert report.status == "ok", report.render()
    assert report.inputs[model.graph.input[0].name]["shape"] == [2, 3, 64, 64]
