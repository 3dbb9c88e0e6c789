"""The fused shift + 1x1 conv kernel and the shift kernel against the numpy references of
convrewrite/ops/shift.py (``shift_reference`` then a 1x1 conv), over kernel sizes, dilations,
channel counts with an unshifted remainder, ragged output channels, batches, maps with and
without interior tiles, and arbitrary (non-paper) offsets."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from convrewrite.ops.shift import shift_offsets, shift_reference  # noqa: E402
from convrewrite.tvm.kernels.conv_gemm import Tile, pack_weight  # noqa: E402
from convrewrite.tvm.kernels.shift_conv import (  # noqa: E402
    offsets_table, shift_conv_geometry,
                                                shift_conv_prim_func, shift_prim_func, shift_tables)  # noqa: E402
from convrewrite.tvm.machines import cpu_target  # noqa: E402

CASES = [
    # batch, channels, h, w, out_channels, kernel_size, dilation
    (1, 18, 8, 8, 32, 3, 1),
    (1, 40, 7, 9, 16, 3, 1),        # 40 = 4·9 + 4 unshifted
    (2, 27, 6, 6, 10, 3, 2),        # dilation 2, ragged Cout, batch 2
    (1, 50, 10, 10, 64, 5, 1),      # 5x5 window: offsets up to 2
    (1, 5, 4, 4, 16, 3, 1),         # fewer channels than directions: nothing shifts
    (2, 36, 12, 24, 32, 3, 1),      # several tiles per row: interior tiles take the fast path
    (1, 18, 5, 13, 16, 3, 1),       # prime width: one-pixel tiles
]


def _reference(x, offsets, w):
    shifted = shift_reference(x, offsets)
    return np.einsum("oc,nchw->nohw", w, shifted)


def _inputs(batch, channels, h, w, out_channels, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, channels, h, w)).astype(np.float32)
    weight = rng.uniform(-1, 1, (out_channels, channels)).astype(np.float32)
    return x, weight


def _fused(x, offsets, weight, tile=None):
    batch, channels, h, w = x.shape
    geom = shift_conv_geometry(batch, channels, h, w, weight.shape[0])
    func, tile = shift_conv_prim_func(geom, offsets, tile)
    lib = tvm.compile(func, target=cpu_target())
    z = tvm.runtime.tensor(np.zeros((batch, weight.shape[0], h, w), np.float32))
    flat, runs = shift_tables(offsets, w)
    lib["main"](*[tvm.runtime.tensor(a) for a in (
        x, flat, runs, pack_weight(weight[:, :, None, None], tile))], z)
    return z.numpy()


def _check(z, x, offsets, weight):
    ref = _reference(x, offsets, weight)
    np.testing.assert_allclose(z, ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())), rtol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_fused_shift_conv_matches_reference(case):
    batch, channels, h, w, cout, k, dil = case
    x, weight = _inputs(batch, channels, h, w, cout)
    offsets = shift_offsets(channels, k, dil)
    _check(_fused(x, offsets, weight), x, offsets, weight)


@pytest.mark.parametrize("tile", [Tile(4, 1), Tile(2, 2), Tile(1, 1)], ids=str)
def test_fused_arbitrary_offsets_and_tiles(tile):
    """Offsets in no paper order (runs of 1 to 3 channels, reach 2 rows / 3 columns), on tiles
    where the edge pixels are the whole tile (1, 2) or not (4)."""
    rng = np.random.default_rng(3)
    offsets = np.repeat(rng.integers(-2, 3, (12, 2)), rng.integers(1, 4, 12), axis=0)
    offsets[:, 1] = np.clip(offsets[:, 1] * 2, -3, 3)
    x, weight = _inputs(1, len(offsets), 9, 12, 16, seed=4)
    _check(_fused(x, offsets, weight, tile), x, offsets, weight)


def test_fused_kernel_never_writes_the_shifted_tensor():
    """The only buffers the kernel allocates are its register tiles (MR pixels x 16 lanes):
    no shifted tensor, no zero-padded copy of the input."""
    geom = shift_conv_geometry(1, 18, 8, 16, 32)
    func, tile = shift_conv_prim_func(geom, shift_offsets(18))
    allocs = [ln for ln in func.script().splitlines() if "alloc" in ln]
    assert allocs and all(f"T.int64({tile.mr}), T.int64(16)" in a or "T.int64(2), T.int64(16)"
                          in a for a in allocs), allocs
    assert all('scope="local"' in a or "alloc_local" in a for a in allocs)


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: "-".join(map(str, c)))
def test_shift_kernel_matches_reference(case):
    batch, channels, h, w, _, k, dil = case
    x, _ = _inputs(batch, channels, h, w, 1)
    offsets = shift_offsets(channels, k, dil)
    lib = tvm.compile(shift_prim_func(x.shape), target=cpu_target())
    y = tvm.runtime.tensor(np.zeros_like(x))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(offsets_table(offsets)), y)
    np.testing.assert_array_equal(y.numpy(), shift_reference(x, offsets))


@pytest.mark.parametrize("steps", [("bias",), ("relu",), ("bias", "residual", "relu"),
                                   ("residual", "relu", "bias")])
def test_epilogue_is_applied_in_order_on_the_way_out(steps):
    batch, channels, h, w, out_channels = 2, 27, 6, 12, 20       # ragged Cout, interior tiles
    x, weight = _inputs(batch, channels, h, w, out_channels)
    rng = np.random.default_rng(1)
    bias = rng.uniform(-1, 1, out_channels).astype(np.float32)
    residual = rng.uniform(-1, 1, (batch, out_channels, h, w)).astype(np.float32)
    offsets = shift_offsets(channels, 3, 1)
    geom = shift_conv_geometry(batch, channels, h, w, out_channels)
    func, tile = shift_conv_prim_func(geom, offsets, epilogue=steps)
    lib = tvm.compile(func, target=cpu_target())
    z = tvm.runtime.tensor(np.zeros((batch, out_channels, h, w), np.float32))
    args = [x, *shift_tables(offsets, w), pack_weight(weight[:, :, None, None], tile)]
    args += [bias] if "bias" in steps else []
    args += [residual] if "residual" in steps else []
    lib["main"](*[tvm.runtime.tensor(a) for a in args], z)
    want = _reference(x, offsets, weight)
    for step in steps:
        want = {"bias": lambda v: v + bias[None, :, None, None],
                "residual": lambda v: v + residual,
                "relu": lambda v: np.maximum(v, 0)}[step](want)
    np.testing.assert_allclose(z.numpy(), want, atol=1e-5 * max(1.0, float(np.abs(want).max())),
                               rtol=1e-4)


def test_an_unknown_or_repeated_epilogue_step_is_refused():
    geom = shift_conv_geometry(1, 18, 8, 8, 16)
    for steps in (("gelu",), ("relu", "relu")):
        with pytest.raises(ValueError, match="epilogue"):
            shift_conv_prim_func(geom, shift_offsets(18, 3, 1), epilogue=steps)
