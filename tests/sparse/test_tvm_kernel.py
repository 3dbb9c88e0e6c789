"""The TVM gather-GEMM-scatter kernel against the dense reference: on the CPU (LLVM), and the CUDA
version generated and compiled with nvcc (run only where a GPU is present)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from convrewrite.sparse import SparseConvAttrs, build_rulebook, tap_weights  # noqa: E402
from convrewrite.sparse.reference import dense_reference  # noqa: E402
from convrewrite.tvm.kernels.sparse_conv import SparseConvKernel, output_major  # noqa: E402
from tests.sparse.cases import random_sparse  # noqa: E402

CASES = [   # grid, batches, count, cin, cout, submanifold, stride, kernel
    ((10, 9, 8), 2, 300, 64, 64, True, 1, 3),
    ((10, 9, 8), 1, 200, 5, 7, False, 2, 3),         # Cout not a multiple of the vector width
    ((16, 16), 2, 120, 16, 96, True, 1, 5),
    ((12, 12), 1, 60, 8, 32, False, 1, 2),
]


def _case(grid, batches, count, cin, cout, sub, stride, k, seed=0):
    rank = len(grid)
    attrs = SparseConvAttrs.create([k] * rank, grid, None if sub else [stride] * rank,
                                   None if sub else [1] * (2 * rank), None, sub)
    rng, coords, _ = random_sparse(seed, batches, grid, count, 1)
    features = rng.uniform(-1, 1, (count, cin)).astype(np.float32)
    w = rng.uniform(-1, 1, (cout, cin, *attrs.kernel_shape)).astype(np.float32)
    b = rng.uniform(-1, 1, cout).astype(np.float32)
    return attrs, coords, features, w, b


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[0])}d-{c[3]}x{c[4]}-k{c[7]}")
def test_cpu_kernel_matches_dense_reference(case):
    attrs, coords, features, w, b = _case(*case)
    rb = build_rulebook(coords, attrs)
    kernel = SparseConvKernel(case[3], case[4], attrs.kernel_volume)
    got = kernel(features, rb, tap_weights(w), b)
    ref, _ = dense_reference(features, coords, w, b, attrs)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case, space_order", [
    (((10, 9, 8), 1, 500, 4, 4, True, 1, 3), True),     # 15 pairs per site: coordinate order
    (((20, 20, 20), 1, 300, 4, 4, True, 1, 3), False),   # about 2: storage order
    (CASES[1], True),                                    # regular outputs are sorted anyway
], ids=["dense-submanifold", "sparse-submanifold", "regular"])
def test_output_major_groups_pairs_by_row_in_tap_order(case, space_order):
    attrs, coords, *_ = _case(*case)
    rb = build_rulebook(coords, attrs)
    layout = output_major(rb)
    visited = [tuple(c) for c in rb.out_coords[layout.row_order].tolist()]
    assert (visited == sorted(visited)) == space_order
    if not space_order:
        np.testing.assert_array_equal(layout.row_order, np.arange(rb.num_out))
    visit = np.argsort(layout.row_order)
    tap_of = np.repeat(np.arange(len(rb.counts)), rb.counts)
    order = np.argsort(visit[rb.out_index], kind="stable")   # tap-major, so taps stay in order
    np.testing.assert_array_equal(layout.pair_in, rb.in_index[order])
    np.testing.assert_array_equal(layout.pair_tap, tap_of[order])
    np.testing.assert_array_equal(np.diff(layout.row_ptr),
                                  np.bincount(visit[rb.out_index], minlength=rb.num_out))


def test_same_result_on_one_and_two_threads():
    attrs, coords, features, w, b = _case(*CASES[0])
    rb = build_rulebook(coords, attrs)
    kernel = SparseConvKernel(64, 64, 27)
    args = kernel.tensors(features, output_major(rb), tap_weights(w), b)
    config = tvm.get_global_func("runtime.config_threadpool")
    results = []
    for threads in (1, 2, 1):
        config(0, threads)
        kernel.run(args)
        results.append(args[-1].numpy().copy())
    config(0, 0)
    assert all(np.array_equal(results[0], r) for r in results[1:])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_kernel_generates_and_compiles():
    kernel = SparseConvKernel(64, 96, 27, "cuda")
    source = kernel.source()
    assert "__global__" in source and "blockIdx.x" in source and "atomicAdd" not in source
    if not tvm.cuda(0).exist:
        pytest.skip("no GPU here: the CUDA kernel was generated and compiled, not run")
    attrs, coords, features, w, b = _case(*CASES[0][:3], 64, 96, True, 1, 3)
    rb = build_rulebook(coords, attrs)
    got = kernel(features, rb, tap_weights(w), b)
    ref, _ = dense_reference(features, coords, w, b, attrs)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("epilogue", ["none", "affine_relu"])
def test_cpu_kernel_keeps_its_accumulators_off_the_heap(epilogue):
    """The per-row accumulators are on the stack: the compiled CPU kernel calls no
    TVMBackendAllocWorkspace (it did once per output row and vector chunk)."""
    from convrewrite.tvm.kernels.sparse_conv import sparse_conv_prim_func
    from convrewrite.tvm.machines import cpu_target
    lib = tvm.compile(tvm.IRModule({"main": sparse_conv_prim_func(4, 16, 27, "llvm", epilogue)}),
                      target=cpu_target())
    assert "TVMBackendAllocWorkspace" not in lib.mod.inspect_source("ll")
