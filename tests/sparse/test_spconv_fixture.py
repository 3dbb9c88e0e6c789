"""Ours against spconv 2.3.8's own outputs on small cases (tests/sparse/spconv_fixture.npz, made
by make_spconv_fixture.py with spconv's python): the same output sites and values, compared by
coordinate (spconv lists regular outputs in another order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convrewrite.sparse import SparseConvAttrs, onnx_weight_from_spconv, sparse_conv
from tests.sparse.make_spconv_fixture import CASES

FIXTURE = np.load(Path(__file__).with_name("spconv_fixture.npz"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_spconv(name):
    grid, _, _, _, _, sub, k, s, p, d = CASES[name]
    data = {key: FIXTURE[f"{name}.{key}"] for key in ("coords", "features", "weight", "bias",
                                                     "out_coords", "out_features")}
    rank = len(grid)
    attrs = SparseConvAttrs.create([k] * rank, grid, None if sub else [s] * rank,
                                   None if sub else [p] * (2 * rank), [d] * rank, sub)
    got, sites = sparse_conv(data["features"], data["coords"],
                             onnx_weight_from_spconv(data["weight"]), data["bias"], attrs=attrs)
    ours = np.lexsort(sites.T[::-1])
    theirs = np.lexsort(data["out_coords"].T[::-1])
    np.testing.assert_array_equal(sites[ours], data["out_coords"][theirs])
    np.testing.assert_allclose(got[ours], data["out_features"][theirs], rtol=1e-5, atol=1e-5)
    if sub:         # submanifold: the input sites in the input's order, as spconv
        np.testing.assert_array_equal(sites, data["out_coords"])
