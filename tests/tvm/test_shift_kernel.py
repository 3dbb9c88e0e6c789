"""The fused shift + 1x1 conv kernel and the shift kernel against the numpy references of
convrewrite/ops/shift.py (``shift_reference`` then a 1x1 conv), over kernel sizes, dilations,
channel counts with an unshifted remainder, ragged output channels and batches."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from convrewrite.ops.shift import shift_offsets, shift_reference  # noqa: E402
from convrewrite.tvm.cpu_conv import pack_weight, schedule_conv  # noqa: E402
from convrewrite.tvm.shift_kernel import (offsets_table, shift_conv_geometry,  # noqa: E402
                                          shift_conv_prim_func, shift_prim_func)
from convrewrite.tvm.targets import cpu_target  # noqa: E402

CASES = [
    # batch, channels, h, w, out_channels, kernel_size, dilation
    (1, 18, 8, 8, 32, 3, 1),
    (1, 40, 7, 9, 16, 3, 1),        # 40 = 4·9 + 4 unshifted
    (2, 27, 6, 6, 10, 3, 2),        # dilation 2, ragged Cout, batch 2
    (1, 50, 10, 10, 64, 5, 1),      # 5x5 window: offsets up to 2
    (1, 5, 4, 4, 16, 3, 1),         # fewer channels than directions: nothing shifts
]


def _reference(x, offsets, w):
    shifted = shift_reference(x, offsets)
    return np.einsum("oc,nchw->nohw", w, shifted)


def _inputs(batch, channels, h, w, out_channels, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, channels, h, w)).astype(np.float32)
    weight = rng.uniform(-1, 1, (out_channels, channels)).astype(np.float32)
    return x, weight


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_fused_shift_conv_matches_reference(case):
    from tvm.s_tir import Schedule
    batch, channels, h, w, cout, k, dil = case
    x, weight = _inputs(batch, channels, h, w, cout)
    offsets = shift_offsets(channels, k, dil)
    geom = shift_conv_geometry(batch, channels, h, w, cout)
    func, tile = shift_conv_prim_func(geom, offsets)
    sch = Schedule(func)
    schedule_conv(sch)
    lib = tvm.compile(sch.mod, target=cpu_target())
    z = tvm.runtime.tensor(np.zeros((batch, cout, h, w), np.float32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(offsets_table(offsets)),
                tvm.runtime.tensor(pack_weight(weight[:, :, None, None], tile)), z)
    ref = _reference(x, offsets, weight)
    np.testing.assert_allclose(z.numpy(), ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())),
                               rtol=1e-4)


def test_fused_kernel_never_writes_the_shifted_tensor():
    """The only intermediate buffers are the zero-padded input copy and the register tile; no
    buffer of the shifted tensor's shape exists."""
    from tvm.s_tir import Schedule
    geom = shift_conv_geometry(1, 18, 8, 8, 32)
    func, _ = shift_conv_prim_func(geom, shift_offsets(18))
    sch = Schedule(func)
    schedule_conv(sch)
    text = sch.mod.script()
    allocs = [ln for ln in text.splitlines() if "alloc_buffer" in ln]
    assert len(allocs) == 2
    assert any("conv_gemm_pad" in a and "T.int64(10), T.int64(10)" in a for a in allocs)
    assert any('scope="local"' in a for a in allocs)


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: "-".join(map(str, c)))
def test_shift_kernel_matches_reference(case):
    batch, channels, h, w, _, k, dil = case
    x, _ = _inputs(batch, channels, h, w, 1)
    offsets = shift_offsets(channels, k, dil)
    lib = tvm.compile(shift_prim_func(x.shape), target=cpu_target())
    y = tvm.runtime.tensor(np.zeros_like(x))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(offsets_table(offsets)), y)
    np.testing.assert_array_equal(y.numpy(), shift_reference(x, offsets))
