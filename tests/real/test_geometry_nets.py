"""Segmentation and generative topologies (DeepLab ASPP, U-Net, DCGAN, big kernels) rewritten
for every preset: all verified, and fully legal on the K210."""

from __future__ import annotations

import pytest

import convrewrite as cr
from convrewrite.models import big_kernel_net, dcgan_generator, deeplab_head, unet
from convrewrite.target import preset_names

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


def test_nvdla_names_why_transposed_convs_stay():
    out, report = cr.rewrite(unet(size=32), "nvdla")
    assert report.status == "illegal"
    assert all(r.op == "ConvTranspose" for r in report.remaining)
    assert any("DepthToSpace" in reason for r in report.remaining for reason in r.reasons)
