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


def test_nvdla_upsamples_by_zero_insertion():
    """NVDLA's op list has no DepthToSpace or Slice: the sub-pixel form is refused, zero
    insertion (Unsqueeze, Pad, Reshape) is used, and the record says why."""
    out, report = cr.rewrite(unet(size=32), "nvdla")
    assert report.status == "ok", report.render()
    transposed = [r for r in report.records if r.pass_name == "transposed"]
    assert len(transposed) == 3
    assert all(r.rewrite.startswith("zero insertion") and "lacks" in r.rewrite
               for r in transposed)
