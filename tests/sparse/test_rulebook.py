"""The rulebook and the numpy executor: the seed's hand-made 5x5 example, then random cases against
a loop-by-loop rulebook and the dense reference on onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convrewrite.sparse import SparseConvAttrs, SparseConvError, build_rulebook, sparse_conv
from convrewrite.sparse.reference import dense_reference
from convrewrite.ops.sparse_conv import onnx_weight_from_spconv, spconv_weight_from_onnx
from tests.sparse.brute import brute_rulebook, dense_conv
from tests.sparse.cases import random_sparse

# SEEDS.md section 5: a 1x3x5x5 input, active only at P1 = (1, 2) and P2 = (2, 3).
P = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)
F = np.array([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2]], dtype=np.float32)


def pair_sets(rb) -> dict[int, set]:
    return {k: set(zip(*(a.tolist() for a in rb.pairs(k)))) for k in range(len(rb.counts))}


def test_seed_example_submanifold():
    rb = build_rulebook(P, SparseConvAttrs.create([3, 3], [5, 5], submanifold=True))
    assert rb.out_coords.tolist() == P.tolist()             # the input sites, in input order
    expected = {k: set() for k in range(9)}
    expected[4] = {(0, 0), (1, 1)}          # centre: each site onto itself
    expected[8] = {(1, 0)}                  # tap (2, 2): P1's output reads P1 + (1, 1) = P2
    expected[0] = {(0, 1)}                  # tap (0, 0): P2's output reads P2 - (1, 1) = P1
    assert pair_sets(rb) == expected
    assert rb.identity_tap == 4


def test_seed_example_regular_valid_padding():
    rb = build_rulebook(P, SparseConvAttrs.create([3, 3], [5, 5]))
    # out[o] = sum_k W[k] in[o + k] on the 3x3 output grid: P1 reaches o = P1 - k, P2 o = P2 - k
    sites = [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (0, 1, 2), (0, 2, 1),
             (0, 2, 2)]
    assert [tuple(c) for c in rb.out_coords.tolist()] == sites          # sorted order
    row = {s: i for i, s in enumerate(sites)}
    expected = {k: set() for k in range(9)}
    for k in range(9):
        ky, kx = divmod(k, 3)
        for src, (y, x) in enumerate([(1, 2), (2, 3)]):
            o = (0, y - ky, x - kx)
            if o in row:
                expected[k].add((src, row[o]))
    assert pair_sets(rb) == expected
    assert rb.num_pairs == 12           # 6 outputs per input site


def test_seed_example_values_match_dense():
    w = np.arange(2 * 3 * 9, dtype=np.float32).reshape(2, 3, 3, 3) / 10
    b = np.array([0.5, -0.5], dtype=np.float32)
    for attrs in (SparseConvAttrs.create([3, 3], [5, 5], submanifold=True),
                  SparseConvAttrs.create([3, 3], [5, 5]),
                  SparseConvAttrs.create([3, 3], [5, 5], pads=[1, 1, 1, 1])):
        got, sites = sparse_conv(F, P, w, b, attrs=attrs)
        ref, ref_sites = dense_conv(F, P, w, b, attrs)
        assert sites.tolist() == ref_sites.tolist()
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    # the regular "same" conv covers the 3x3 windows of both sites: 9 + 9 - 4 overlapping
    assert len(sparse_conv(F, P, w, None, attrs=attrs)[1]) == 14


def test_index_arrays_are_small_and_taps_disjoint():
    rng = np.random.default_rng(0)
    coords = np.stack(np.unravel_index(rng.choice(2 * 40 * 40 * 40, 500, replace=False),
                                       (2, 40, 40, 40)), 1).astype(np.int32)
    rb = build_rulebook(coords, SparseConvAttrs.create([3] * 3, [40] * 3, [2] * 3, [1] * 6))
    assert rb.in_index.dtype == np.int32 and rb.out_coords.dtype == np.int32
    assert rb.num_pairs <= 27 * 500                 # proportional to the sites, not the grid
    for k in range(27):
        _, out = rb.pairs(k)
        assert len(np.unique(out)) == len(out)      # a tap never writes a row twice


def test_spconv_weight_layout_round_trip():
    w = np.random.default_rng(0).standard_normal((4, 2, 3, 5, 7)).astype(np.float32)
    s = spconv_weight_from_onnx(w)
    assert s.shape == (4, 3, 5, 7, 2)
    assert s[1, 2, 3, 4, 0] == w[1, 0, 2, 3, 4]
    np.testing.assert_array_equal(onnx_weight_from_spconv(s), w)


def test_empty_input():
    for sub in (True, False):
        attrs = SparseConvAttrs.create([3, 3], [5, 5], submanifold=sub)
        out, sites = sparse_conv(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64),
                                 np.ones((2, 3, 3, 3), np.float32), attrs=attrs)
        assert out.shape == (0, 2) and sites.shape == (0, 3)


@st.composite
def cases(draw):
    rank = draw(st.sampled_from([2, 3]))
    submanifold = draw(st.booleans())
    grid = [draw(st.integers(3, 9)) for _ in range(rank)]
    kernel = [draw(st.sampled_from([1, 3, 5] if submanifold else [1, 2, 3])) for _ in range(rank)]
    dilations = [draw(st.integers(1, 2)) for _ in range(rank)]
    if submanifold:
        strides, pads = None, None
    else:
        strides = [draw(st.integers(1, 3)) for _ in range(rank)]
        pads = [draw(st.integers(0, 2)) for _ in range(2 * rank)]
    try:
        attrs = SparseConvAttrs.create(kernel, grid, strides, pads, dilations, submanifold)
    except SparseConvError:        # an empty output grid
        attrs = None
    batches = draw(st.integers(1, 3))
    volume = batches * int(np.prod(grid))
    count = draw(st.integers(1, min(volume, 40)))
    seed = draw(st.integers(0, 2 ** 16))
    return attrs, batches, grid, count, seed


def _draw(batches, grid, count, seed, dtype=np.int32):
    return random_sparse(seed, batches, grid, count, 3, dtype)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_rulebook_matches_loops(case):
    attrs, batches, grid, count, seed = case
    assume(attrs is not None)
    _, coords, _ = _draw(batches, grid, count, seed)
    rb = build_rulebook(coords, attrs)
    sites, pairs = brute_rulebook(coords, attrs)
    assert [tuple(c) for c in rb.out_coords.tolist()] == sites
    assert pair_sets(rb) == pairs


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from([np.int32, np.int64]))
def test_executor_matches_dense_reference_on_onnxruntime(case, dtype):
    attrs, batches, grid, count, seed = case
    assume(attrs is not None)
    rng, coords, features = _draw(batches, grid, count, seed, dtype)
    w = rng.uniform(-1, 1, (4, 3, *attrs.kernel_shape)).astype(np.float32)
    b = rng.uniform(-1, 1, 4).astype(np.float32)
    got, sites = sparse_conv(features, coords, w, b, attrs=attrs)
    ref, ref_sites = dense_reference(features, coords, w, b, attrs)
    assert sites.dtype == dtype and ref_sites.dtype == dtype
    np.testing.assert_array_equal(sites, ref_sites)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_float16_accumulates_in_float32():
    rng, coords, features = _draw(1, [6, 6], 20, 3)
    attrs = SparseConvAttrs.create([3, 3], [6, 6], submanifold=True)
    w = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
    half, _ = sparse_conv(features.astype(np.float16), coords, w.astype(np.float16), attrs=attrs)
    full, _ = sparse_conv(features.astype(np.float16).astype(np.float32), coords,
                          w.astype(np.float16).astype(np.float32), attrs=attrs)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, full, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("sub", [True, False])
def test_same_result_every_run(sub):
    rng, coords, features = _draw(2, [12, 12, 12], 400, 7)
    attrs = SparseConvAttrs.create([3] * 3, [12] * 3, None if sub else [2] * 3,
                                   None if sub else [1] * 6, None, sub)
    w = rng.uniform(-1, 1, (8, 3, 3, 3, 3)).astype(np.float32)
    first = sparse_conv(features, coords, w, attrs=attrs)[0]
    assert all(np.array_equal(first, sparse_conv(features, coords, w, attrs=attrs)[0])
               for _ in range(3))


def test_sites_checked_and_sorted_once_per_site_set(monkeypatch):
    """The TVM build's rulebooks validate and sort each site set once: the U-Net's six rulebooks
    (on the input sites and two strided convs' outputs, which come out sorted) sort the input
    sites alone (was: once per rulebook). The rulebooks are those built on their own."""
    from convrewrite.models.sparse_nets import sparse_unet_3d
    from convrewrite.sparse import rulebook as rulebook_module
    from convrewrite.sparse.inputs import random_sites
    from convrewrite.sparse.tvm_model import SparseTvmModel
    grid = (24, 20, 12)
    model = SparseTvmModel(sparse_unet_3d(grid))
    rng = np.random.default_rng(0)
    feeds = {"coordinates": random_sites(rng, 400, grid, dtype=np.int32),
             "features": rng.uniform(-1, 1, (400, 4)).astype(np.float32)}
    sorts = []
    real = rulebook_module._sorted_unique
    monkeypatch.setattr(rulebook_module, "_sorted_unique",
                        lambda keys, c: sorts.append(len(keys)) or real(keys, c))
    books, coords = model.rulebooks(feeds)
    assert model.built_rulebooks == 6 and sorts == [400]
    monkeypatch.setattr(rulebook_module, "_sorted_unique", real)
    for conv in model.convs:
        if conv.key[-1] != "reversed" and not conv.inverse:
            alone = build_rulebook(coords[conv.coords_in], conv.attrs)
            got = books[conv.key]
            for field in ("in_index", "out_index", "offsets", "out_coords"):
                np.testing.assert_array_equal(getattr(got, field), getattr(alone, field))
            assert (got.sorted_rows is None) == (alone.sorted_rows is None)
            if got.sorted_rows is not None:
                np.testing.assert_array_equal(got.sorted_rows, alone.sorted_rows)


def test_pointwise_submanifold_rulebook_is_the_identity_without_a_site_order():
    attrs = SparseConvAttrs.create([1, 1], (9, 8), None, None, None, True)
    coords = np.array([[0, 5, 1], [0, 0, 7], [1, 2, 2], [0, 3, 3]], np.int32)
    rb = build_rulebook(coords, attrs)
    np.testing.assert_array_equal(rb.in_index, np.arange(4))
    np.testing.assert_array_equal(rb.out_index, np.arange(4))
    assert rb.sorted_rows is None
    with pytest.raises(SparseConvError, match="same site"):
        build_rulebook(np.concatenate([coords, coords[:1]]), attrs)


@pytest.mark.parametrize("rank, kernel, pads, batches", [
    (3, [2, 2, 2], [0] * 6, 1), (3, [2, 1, 3], [1, 0, 0, 0, 1, 2], 2), (2, [3, 2], [0, 1, 1, 0], 2),
    (2, [1, 1], [0] * 4, 1)])
def test_tiling_conv_takes_one_candidate_per_site(monkeypatch, rank, kernel, pads, batches):
    """Kernel = stride (a U-Net's 2x2x2 down conv): each site's one candidate output is computed
    directly, not K candidates per site (``_candidates`` is not called), and the rulebook is the
    general path's, array for array."""
    from convrewrite.sparse import rulebook as rulebook_module
    grid = (9, 8, 7)[:rank]
    attrs = SparseConvAttrs.create(kernel, grid, kernel, pads, None, False)
    _, coords, _ = random_sparse(1, batches, grid, 60, 1)
    general = rulebook_module._candidates
    calls = []
    monkeypatch.setattr(rulebook_module, "_candidates",
                        lambda *a: calls.append(1) or general(*a))
    fast = build_rulebook(coords, attrs)
    assert calls == []
    monkeypatch.setattr(rulebook_module, "_tiling", lambda attrs: False)
    slow = build_rulebook(coords, attrs)
    assert calls == [1]
    for field in ("in_index", "out_index", "offsets", "out_coords"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
        assert getattr(fast, field).dtype == getattr(slow, field).dtype
