"""Whole sparse networks of our ops, lowered and verified: the 3-layer SubM + strided + inverse
net against its dense reference, the U-Net and the SECOND-style middle encoder in both rulebook
forms, and each rulebook built once (spconv's indice_key)."""

from __future__ import annotations

import numpy as np
import pytest

from convrewrite import api
from convrewrite.models.sparse_nets import (sparse_down_up_3d, sparse_middle_encoder_3d,
                                            sparse_unet_3d)
from convrewrite.ops.reference import standard_reference
from convrewrite.sparse.inputs import random_sites
from convrewrite.verify import run
from tests.sparse.cases import HOST


def _feeds(seed, count, grid, channels):
    rng = np.random.default_rng(seed)
    return {"coordinates": random_sites(rng, count, grid, dtype=np.int32),
            "features": rng.uniform(-1, 1, (count, channels)).astype(np.float32)}


def _same_as_reference(model, rewritten, feeds, outputs=("out_features",)):
    ref, got = run(standard_reference(model), feeds), run(rewritten, feeds)
    for name in outputs:
        if np.issubdtype(ref[name].dtype, np.integer):
            np.testing.assert_array_equal(got[name], ref[name])
        else:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4)


def _shared(report) -> list[str]:
    return [r.node for r in report.records if "shared" in r.rewrite]


@pytest.mark.parametrize("constant", [False, True])
def test_subm_strided_inverse_end_to_end(constant):
    grid = (12, 10, 8)
    coords = random_sites(np.random.default_rng(1), 120, grid, dtype=np.int32)
    model = sparse_down_up_3d(grid, coords=coords if constant else None)
    rewritten, report = api.rewrite(model, HOST)
    assert report.status == "ok", report.render()
    assert [r.node for r in report.records] == ["subm", "down", "up"]
    assert all(r.verify["passed"] for r in report.records) and report.end_to_end["passed"]
    assert "read backwards" in " ".join(report.records[2].notes)
    assert _shared(report) == ["up"]
    assert not any(n.domain == "ai.convrewrite" for n in rewritten.graph.node)
    if not constant:        # another point cloud, 2 batch items
        _same_as_reference(model, rewritten, _feeds(4, 300, grid, 3))


@pytest.mark.parametrize("constant", [False, True])
def test_unet_builds_each_rulebook_once(constant):
    grid = (24, 20, 12)
    coords = random_sites(np.random.default_rng(2), 400, grid, dtype=np.int32)
    model = sparse_unet_3d(grid, coords=coords if constant else None)
    rewritten, report = api.rewrite(model, HOST)
    assert report.status == "ok", report.render()
    assert all(r.verify["passed"] for r in report.records) and report.end_to_end["passed"]
    # decoder SubMs reuse the encoder's rulebooks on the same sites, inverse convs reuse the
    # strided convs' rulebooks backwards; only the 1x1 head's is new
    assert sorted(_shared(report)) == ["dec0", "dec1", "up0", "up1"]
    built = [r.node for r in report.records if "shared" not in r.rewrite]
    assert built == ["enc0", "down1", "enc1", "down2", "bottom", "head"]
    if not constant:
        _same_as_reference(model, rewritten, _feeds(5, 700, grid, 4),
                           ("out_features", "out_coordinates"))
    else:
        assert report.inputs == {"features": {"shape": [400, 4], "dtype": "float32"}}


def test_middle_encoder():
    grid = (64, 64, 16)
    model = sparse_middle_encoder_3d(grid)
    rewritten, report = api.rewrite(model, HOST)
    assert report.status == "ok", report.render()
    assert len(report.records) == 5 and not _shared(report)
    _same_as_reference(model, rewritten, _feeds(6, 900, grid, 16),
                       ("out_features", "out_coordinates"))
