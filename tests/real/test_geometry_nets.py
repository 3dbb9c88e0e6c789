"""Segmentation and generative topologies (DeepLab ASPP, U-Net, DCGAN, big kernels) rewritten
for every preset: all verified, and fully legal on the K210."""

from __future__ import annotations

import pytest

import convrewrite as cr
from convrewrite.models import big_kernel_net, dcgan_generator, deeplab_head, unet
from convrewrite.target import preset_names
from tests.conv_cases import emitted_within

NETS = {"deeplab_head": lambda: deeplab_head(size=17), "unet": lambda: unet(size=32),
        "dcgan_generator": dcgan_generator, "big_kernel_net": lambda: big_kernel_net(size=48)}


@pytest.fixture(scope="module", params=sorted(NETS))
def net(request):
    return request.param, NETS[request.param]()


@pytest.mark.parametrize("preset", preset_names())
def test_geometry_net_for_preset(net, preset):
    name, model = net
    out, report = cr.rewrite(model, preset)
    assert not report.mismatches, report.render()
    if preset == "k210":
        assert report.status == "ok", report.render()
        assert not cr.check(out, preset).remaining
    for remaining in report.remaining:
        assert remaining.reasons, report.render()
    if report.records:
        assert report.end_to_end["passed"]


def test_nvdla_upsamples_by_sub_pixel_without_depth_to_space():
    """NVDLA's op list has no DepthToSpace or Slice: U-Net's 2x2 stride-2 up-convs need no
    crop, so their sub-pixel phases are interleaved by Reshape + Concat (zero insertion would
    cost 4x the MACs), and the record says so."""
    model = unet(size=32)
    out, report = cr.rewrite(model, "nvdla")
    assert report.status == "ok", report.render()
    transposed = [r for r in report.records if r.pass_name == "transposed"]
    assert len(transposed) == 3
    assert all(r.rewrite.startswith("sub-pixel") and "Reshape + Concat" in r.rewrite
               and "zero insertion: 4x the MACs" in r.rewrite for r in transposed)
    assert emitted_within(model, out, "nvdla") == []
