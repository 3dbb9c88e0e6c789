"""SparseInverseConv (spconv's SparseInverseConv): its rulebook against Python loops and against
the strided conv's rulebook read backwards, its values against the dense reference (ONNX's
ConvTranspose on the coarse grid, sampled at the fine sites), its lowering in both rulebook forms,
and a SubM + strided + inverse network end to end."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convrewrite import api
from convrewrite.errors import BadInputError
from convrewrite.models.sparse_nets import sparse_inverse_conv_model
from convrewrite.ops.reference import standard_reference
from convrewrite.pipeline import rewrite_model
from convrewrite.sparse import (SparseConvAttrs, SparseConvError, build_inverse_rulebook,
                                build_rulebook, reverse, sparse_inverse_conv)
from convrewrite.sparse.reference import dense_inverse_reference
from convrewrite.target import load_target
from convrewrite.verify import run
from tests.sparse.cases import HOST, random_sparse


def brute_inverse(coarse: np.ndarray, fine: np.ndarray, attrs: SparseConvAttrs) -> dict:
    """{tap: set of (coarse row, fine row)} by loops over fine sites and taps."""
    rows = {tuple(c): i for i, c in enumerate(coarse.tolist())}
    p, s, d = attrs.pads_begin, attrs.strides, attrs.dilations
    pairs = {}
    for t, tap in enumerate(itertools.product(*[range(k) for k in attrs.kernel_shape])):
        found = set()
        for j, x in enumerate(fine.tolist()):
            num = [x[1 + i] + p[i] - tap[i] * d[i] for i in range(attrs.rank)]
            if all(n % s[i] == 0 for i, n in enumerate(num)):
                o = (x[0], *[n // s[i] for i, n in enumerate(num)])
                if o in rows:
                    found.add((rows[o], j))
        pairs[t] = found
    return pairs


def pair_sets(rb) -> dict:
    return {k: set(zip(*(a.tolist() for a in rb.pairs(k)))) for k in range(len(rb.counts))}


@st.composite
def inverse_cases(draw):
    rank = draw(st.sampled_from([2, 3]))
    kernel = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    grid = tuple(draw(st.integers(kernel * dilation, 9)) for _ in range(rank))
    pads = [draw(st.integers(0, kernel - 1)) for _ in range(2 * rank)]
    attrs = SparseConvAttrs.create([kernel] * rank, grid, [stride] * rank, pads, [dilation] * rank)
    batches = draw(st.integers(1, 2))
    count = draw(st.integers(1, min(25, batches * int(np.prod(grid)))))
    seed = draw(st.integers(0, 2 ** 16))
    from_conv = draw(st.booleans())     # coarse sites: the strided conv's output, or any sites
    return attrs, batches, count, seed, from_conv


def _data(attrs, batches, count, seed, from_conv, cin=3, cout=4):
    rng, fine, _ = random_sparse(seed, batches, attrs.spatial_shape, count, 1)
    if from_conv:
        coarse = build_rulebook(fine, attrs).out_coords
    else:
        grid = attrs.out_spatial_shape
        total = batches * int(np.prod(grid))
        flat = rng.choice(total, min(total, max(1, count // 2)), replace=False)
        coarse = np.stack(np.unravel_index(flat, (batches, *grid)), 1).astype(np.int32)
    features = rng.uniform(-1, 1, (len(coarse), cin)).astype(np.float32)
    w = rng.uniform(-1, 1, (cout, cin, *attrs.kernel_shape)).astype(np.float32)
    b = rng.uniform(-1, 1, cout).astype(np.float32)
    return fine, coarse, features, w, b


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inverse_cases())
def test_inverse_rulebook_and_values(case):
    attrs, batches, count, seed, from_conv = case
    fine, coarse, features, w, b = _data(*case)
    rb = build_inverse_rulebook(coarse, fine, attrs)
    assert pair_sets(rb) == brute_inverse(coarse, fine, attrs)
    assert rb.out_coords.tolist() == fine.tolist()          # the given fine sites, in order
    for k in range(attrs.kernel_volume):
        assert len(np.unique(rb.pairs(k)[1])) == rb.counts[k]     # scatter-safe per tap
    if from_conv:       # the strided conv's rulebook, read backwards, is the same rulebook
        assert pair_sets(reverse(build_rulebook(fine, attrs), fine)) == pair_sets(rb)
    got = sparse_inverse_conv(features, coarse, fine, w, b, attrs=attrs, rulebook=rb)
    ref = dense_inverse_reference(features, coarse, fine, w, b, attrs)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["graph", "precomputed"])
@pytest.mark.parametrize("geometry", [((9, 8), 3, 2, 1), ((8, 6, 7), 2, 2, 0), ((7, 7), 3, 1, 1)])
def test_lowering_matches_dense_reference(form, geometry):
    grid, k, s, p = geometry
    rank = len(grid)
    attrs = SparseConvAttrs.create([k] * rank, grid, [s] * rank, [p] * (2 * rank))
    fine, coarse, features, w, b = _data(attrs, 2, 30, 1, True)
    const = form == "precomputed"
    model = sparse_inverse_conv_model(attrs, w, b, coords=coarse if const else None,
                                      out_coords=fine if const else None)
    lowered, result = rewrite_model(model, load_target(HOST))
    assert not any(n.domain == "ai.convrewrite" for n in lowered.graph.node)
    (record,) = result.records
    assert record.rewrite.startswith("inverse") and (form in record.rewrite) == const or \
        "in-graph" in record.rewrite
    feeds = {"features": features} if const else \
        {"features": features, "coordinates": coarse, "out_coordinates": fine}
    ref = dense_inverse_reference(features, coarse, fine, w, b, attrs)
    np.testing.assert_allclose(run(lowered, feeds)["out_features"], ref, rtol=1e-5, atol=1e-5)
    if not const:       # other sites than the ones it was rewritten with
        fine2, coarse2, f2, _, _ = _data(attrs, 1, 12, 7, False)
        got = run(lowered, {"features": f2, "coordinates": coarse2, "out_coordinates": fine2})
        np.testing.assert_allclose(got["out_features"],
                                   dense_inverse_reference(f2, coarse2, fine2, w, b, attrs),
                                   rtol=1e-5, atol=1e-5)


def test_pipeline_verifies_and_seeds_valid_sites():
    attrs = SparseConvAttrs.create([3, 3, 3], (8, 7, 6), [2] * 3, [1] * 6)
    _, _, _, w, b = _data(attrs, 1, 10, 0, True)
    _, report = api.rewrite(sparse_inverse_conv_model(attrs, w, b), HOST)
    assert report.status == "ok", report.render()
    assert report.records[0].verify["passed"] and report.end_to_end["passed"]
    assert report.inputs["coordinates"]["shape"][0] == report.inputs["features"]["shape"][0]


def test_bad_sites_are_named():
    attrs = SparseConvAttrs.create([2, 2], (8, 8), [2, 2])
    fine = np.array([[0, 1, 1], [0, 7, 7]], np.int32)
    with pytest.raises(SparseConvError, match=r"out of range .*\[input sites, on the strided"):
        build_inverse_rulebook(np.array([[0, 4, 0]], np.int32), fine, attrs)    # coarse grid 4x4
    with pytest.raises(SparseConvError, match=r"same site .*\[output sites\]"):
        build_inverse_rulebook(np.array([[0, 0, 0]], np.int32), fine[[0, 0]], attrs)
    assert issubclass(SparseConvError, BadInputError)
    with pytest.raises(SparseConvError, match="unknown attribute 'submanifold'"):
        SparseConvAttrs.from_node_attrs({"kernel_shape": [2, 2], "spatial_shape": [8, 8],
                                         "submanifold": 0}, "SparseInverseConv")


def test_standard_reference_has_no_custom_ops():
    attrs = SparseConvAttrs.create([2, 2], (8, 8), [2, 2])
    fine, coarse, features, w, b = _data(attrs, 1, 20, 3, True)
    reference = standard_reference(sparse_inverse_conv_model(attrs, w, b))
    assert not any(n.domain == "ai.convrewrite" for n in reference.graph.node)
    got = run(reference, {"features": features, "coordinates": coarse, "out_coordinates": fine})
    np.testing.assert_allclose(got["out_features"],
                               sparse_inverse_conv(features, coarse, fine, w, b, attrs=attrs),
                               rtol=1e-5, atol=1e-5)
