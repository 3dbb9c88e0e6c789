"""Every conv-variant builder, rewritten for every preset: legal (or honestly reported), never a
mismatch, and checked against the original on onnxruntime."""

from __future__ import annotations

import functools

import pytest

import convrewrite as cr
from convrewrite.models.variants import (channelnet_block, depth_multiplier_net, resnext_block,
                                         shift_resnet, shufflenet_v2)
from convrewrite.target import preset_names

SMALL_SHUFFLENET = dict(image_size=64, widths=(16, 32, 64, 128, 256), repeats=(2, 3, 2),
                        num_classes=10)
MODELS = {
    "shufflenet_v2_static": functools.partial(shufflenet_v2, shuffle="static", **SMALL_SHUFFLENET),
    "shufflenet_v2_dynamic": functools.partial(shufflenet_v2, shuffle="dynamic",
                                               **SMALL_SHUFFLENET),
    "shufflenet_v2_split": functools.partial(shufflenet_v2, shuffle="split", **SMALL_SHUFFLENET),
    "resnext_block": resnext_block,
    "shift_resnet_op": functools.partial(shift_resnet, form="op"),
    "shift_resnet_depthwise": functools.partial(shift_resnet, form="depthwise"),
    "channelnet_block": channelnet_block,
    "depth_multiplier_net": depth_multiplier_net,
}


@functools.lru_cache(maxsize=None)
def built(name):
    return MODELS[name]()


@pytest.mark.parametrize("preset", preset_names())
@pytest.mark.parametrize("name", sorted(MODELS))
def test_variant_model_for_preset(name, preset):
    out, report = cr.rewrite(built(name), preset)
    assert report.status == "ok", report.render()
    assert not cr.check(out, preset).remaining
    assert all(n.domain != "ai.convrewrite" for n in out.graph.node)
    if report.records:
        assert report.end_to_end["passed"]
        assert all(r.verify["passed"] for r in report.records)


def test_mobilenet_v2_report_names_its_depthwise_separable_pairs():
    from convrewrite.models import mobilenet_v2
    report = cr.check(mobilenet_v2(image_size=32), "nvdla")
    assert sum("depthwise-separable" in r for r in report.recognised) == 17
    assert "recognised 17 depthwise-separable" in report.render()
