"""The precomputed forms' choice (forms.choose_form): the node counts its cost model charges are
the nodes the forms write, and a dense-enough rulebook is run as an implicit GEMM."""

from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from convrewrite.build.onnx import OnnxBuilder
from convrewrite.sparse import SparseConvAttrs, build_rulebook
from convrewrite.sparse.forms import IMPLICIT_MIN_FILL, choose_form, gather_sum, implicit_gemm
from convrewrite.sparse.onnx_form import SharedConstants, emit_form
from convrewrite.sparse.rulebook import reverse
from tests.sparse.cases import random_sparse


def _emitted(plan, cin: int, cout: int) -> int:
    counter = itertools.count()
    e = OnnxBuilder(lambda stem: f"{stem}.{next(counter)}", "conv")
    taps = np.ones((27, cin, cout), np.float32)
    emit_form(gs.Variable("x", np.float32, None), taps, None, plan, gs.Variable("y"), e,
              SharedConstants())
    return len(e.nodes) - 1         # less the result's Identity


@pytest.mark.parametrize("count", [40, 300])
def test_node_counts_are_the_nodes_written(count):
    attrs = SparseConvAttrs.create([3, 3, 3], (8, 7, 6), None, None, None, True)
    _, coords, _ = random_sparse(0, 1, (8, 7, 6), count, 4)
    rb = build_rulebook(coords, attrs)
    summed, dense = gather_sum(rb), implicit_gemm(rb)
    assert summed.nodes() == _emitted(summed, 4, 8)
    assert dense.nodes(4) == _emitted(dense, 4, 8)


def test_a_third_of_the_neighbours_active_runs_as_an_implicit_gemm():
    """A LiDAR-like first SubM (34% of the neighbours active) and its 2x2x2 down conv (32%)
    ran faster implicit on onnxruntime (forms.SECONDS_PER_NODE); a 12%-filled inverse conv
    stays gather-sum."""
    attrs = SparseConvAttrs.create([3, 3, 3], (24, 24, 12), None, None, None, True)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in (24, 24, 12)], indexing="ij"),
                    -1).reshape(-1, 3)
    slab = grid[(grid[:, 2] >= 4) & (grid[:, 2] < 6)]           # a two-voxel-thick surface,
    slab = slab[np.random.default_rng(0).uniform(size=len(slab)) < 0.55]    # half of it
    coords = np.concatenate([np.zeros((len(slab), 1), np.int64), slab], 1).astype(np.int32)
    rb = build_rulebook(coords, attrs)
    fill = rb.num_pairs / (rb.num_out * 27)
    assert IMPLICIT_MIN_FILL <= fill < 0.4
    plan, why = choose_form(rb, 16, 16)
    assert plan.name == "implicit GEMM", why
    down = SparseConvAttrs.create([2, 2, 2], (24, 24, 12), [2, 2, 2], [0] * 6, None, False)
    sparse_coords = coords[::5]
    rb = build_rulebook(sparse_coords, down)
    back = reverse(rb, sparse_coords)
    plan, why = choose_form(back, 32, 16)
    assert plan.name == "gather-sum", why


def test_a_large_dense_enough_subm_runs_as_one_big_gemm():
    """At scale the implicit GEMM's one large MatMul runs at about twice the per-tap GEMMs' rate
    (forms.SECONDS_PER_IMPLICIT_MAC, fitted on the U-Net at 61,741 voxels): a 36k-site surface
    with 47% of the neighbours active, 32 -> 32 channels, runs implicit (was gather-sum)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in (160, 160, 12)], indexing="ij"),
                    -1).reshape(-1, 3)
    slab = grid[(grid[:, 2] >= 4) & (grid[:, 2] < 6)]
    slab = slab[np.random.default_rng(0).uniform(size=len(slab)) < 0.7]
    coords = np.concatenate([np.zeros((len(slab), 1), np.int64), slab], 1).astype(np.int32)
    rb = build_rulebook(coords, SparseConvAttrs.create([3, 3, 3], (160, 160, 12), None, None,
                                                       None, True))
    plan, why = choose_form(rb, 32, 32)
    assert plan.name == "implicit GEMM", why
