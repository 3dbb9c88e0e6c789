"""The sparse model builders, rewritten and verified: the submanifold 3-D U-Net-style block in both
rulebook forms."""

from __future__ import annotations

import numpy as np

from convrewrite import api
from convrewrite.models.sparse_nets import sparse_unet_block_3d
from convrewrite.ops.reference import standard_reference
from convrewrite.sparse.inputs import random_sites
from convrewrite.verify import run
from tests.sparse.cases import HOST


def test_unet_block_runtime_coordinates():
    model = sparse_unet_block_3d()
    rewritten, report = api.rewrite(model, HOST)
    assert report.status == "ok", report.render()
    assert len(report.records) == 7
    assert all(r.verify["passed"] for r in report.records) and report.end_to_end["passed"]
    shared = [r.node for r in report.records if "shared" in r.rewrite]
    assert shared == ["block1/conv1", "block1/conv2", "block2/conv2"]
    assert not any(n.domain == "ai.convrewrite" for n in rewritten.graph.node)
    # another point cloud than the one verified, two batch items
    rng = np.random.default_rng(5)
    feeds = {"coordinates": random_sites(rng, 500, (24, 24, 16), dtype=np.int32),
             "features": rng.uniform(-1, 1, (500, 4)).astype(np.float32)}
    ref, got = run(standard_reference(model), feeds), run(rewritten, feeds)
    np.testing.assert_array_equal(got["out_coordinates"], ref["out_coordinates"])
    np.testing.assert_allclose(got["out_features"], ref["out_features"], rtol=1e-4, atol=1e-5)


def test_unet_block_constant_coordinates():
    rng = np.random.default_rng(2)
    coords = random_sites(rng, 300, (24, 24, 16), dtype=np.int32)
    model = sparse_unet_block_3d(coords=coords)
    rewritten, report = api.rewrite(model, HOST)
    assert report.status == "ok", report.render()
    assert all("precomputed" in r.rewrite for r in report.records)
    assert all(r.verify["passed"] for r in report.records) and report.end_to_end["passed"]
    assert not any(n.op_type in ("Unique", "Compress") for n in rewritten.graph.node)
    assert report.inputs == {"features": {"shape": [300, 4], "dtype": "float32"}}
