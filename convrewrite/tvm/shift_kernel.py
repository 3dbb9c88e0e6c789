"""The shift fused into the following 1×1 conv (SEEDS.md §3): the shift is an address offset in the
GEMM's loads, and the shifted tensor is never written.

    Z[n, co, y, x] = Σ_c W[co, c] · X[n, c, y + dy(c), x + dx(c)]      (0 outside the map)

is our implicit-GEMM conv kernel (``cpu_conv``) with one change: the input a reduction step over
channel ``c`` broadcasts from is displaced by that channel's (dy, dx), read from an int32 [C, 2]
table (``ops.shift.shift_offsets``: the paper's channel assignment). The table is read once per
channel per register tile, shared by its MR·VB multiply-adds; the zero fill comes from the same
zero-padded copy of the input a 3×3 conv reads (a halo of the largest offset), so the inner
loop has no bounds checks. The schedule is ``cpu_conv.schedule_conv`` itself.

``shift_prim_func`` is the shift on its own (for the unfused comparison and as a reference).
"""

from __future__ import annotations

from math import ceil

import numpy as np

from . import require_tvm
from .cpu_conv import (ACC_BLOCK, OUT_BLOCK, PAD_BLOCK, TILE_MR, TILE_VB, ConvGeometry, Tile,
                       choose_tile, i64)


def halo(offsets: np.ndarray) -> tuple[int, int]:
    """Zero rows/columns needed on each side: the largest |dy| and |dx|."""
    offsets = np.asarray(offsets)
    if offsets.size == 0:
        return 0, 0
    return int(np.abs(offsets[:, 0]).max()), int(np.abs(offsets[:, 1]).max())


def shift_conv_geometry(batch: int, channels: int, height: int, width: int,
                        out_channels: int) -> ConvGeometry:
    return ConvGeometry(batch, channels, height, width, out_channels, (1, 1))


def shift_conv_te(geom: ConvGeometry, tile: Tile, hy: int, hx: int, dtype: str = "float32",
                  prepadded: bool = False):
    """TE tensors (x, offsets, packed w, z) of the fused kernel; ``hy``/``hx``: the halo. With
    ``prepadded`` x is the input already zero-padded (shape ``padded_shape``), and the kernel
    has no padding stage."""
    require_tvm()
    from tvm import te
    n_, c_, h_, w_ = geom.batch, geom.in_channels, geom.height, geom.width
    pixels = ceil(geom.pixels / tile.mr) * tile.mr
    extra = max(0, (pixels - 1) // w_ + 1 - h_)  # rows a ragged last tile reads past the map
    blocks = ceil(geom.out_channels / tile.vb)
    off = te.placeholder(i64(c_, 2), "int64", name="offsets")
    wp = te.placeholder(i64(blocks, c_, 1, 1, tile.vb), dtype, name="w_packed")
    padded = i64(n_, c_, h_ + 2 * hy + extra, w_ + 2 * hx)
    if prepadded:
        x = xp = te.placeholder(padded, dtype, name="x_padded")
    else:
        x = te.placeholder(i64(n_, c_, h_, w_), dtype, name="x")
        xp = te.compute(
            padded, lambda n, c, i, j: te.if_then_else(
                te.all(i >= hy, i < hy + h_, j >= hx, j < hx + w_), x[n, c, i - hy, j - hx],
                te.const(0, dtype)),
            name=PAD_BLOCK)
    rc = te.reduce_axis(i64(0, c_), "rc")
    acc = te.compute(
        i64(n_, blocks, pixels, tile.vb),
        lambda n, cb, p, v: te.sum(
            xp[n, rc, p // w_ + hy + off[rc, 0], p % w_ + hx + off[rc, 1]] * wp[cb, rc, 0, 0, v],
            axis=[rc]),
        name=ACC_BLOCK, attrs={TILE_MR: tile.mr, TILE_VB: tile.vb})
    z = te.compute(
        i64(n_, geom.out_channels, h_, w_),
        lambda n, co, i, j: acc[n, co // tile.vb, i * w_ + j, co % tile.vb],
        name=OUT_BLOCK)
    return x, off, wp, z


def shift_conv_prim_func(geom: ConvGeometry, offsets: np.ndarray, tile: Tile | None = None,
                         dtype: str = "float32", prepadded: bool = False):
    """The fused kernel (x, offsets [C, 2] int64, packed w) -> z, unscheduled; its tile."""
    require_tvm()
    from tvm import te
    tile = tile or choose_tile(geom)
    x, off, wp, z = shift_conv_te(geom, tile, *halo(offsets), dtype, prepadded)
    return te.create_prim_func([x, off, wp, z]), tile


def shift_prim_func(shape: tuple[int, int, int, int], dtype: str = "float32"):
    """The shift alone: (x, offsets [C, 2] int64) -> y, scheduled (parallel over channels,
    the row loop vectorised where it is a multiple of 16)."""
    require_tvm()
    from tvm import te
    from tvm.s_tir import Schedule
    from .cpu_schedule import schedule_parallel
    n_, c_, h_, w_ = shape
    x = te.placeholder(i64(*shape), dtype, name="x")
    off = te.placeholder(i64(c_, 2), "int64", name="offsets")

    def element(n, c, i, j):
        si, sj = i + off[c, 0], j + off[c, 1]
        inside = te.all(si >= 0, si < h_, sj >= 0, sj < w_)
        return te.if_then_else(inside, x[n, c, te.max(te.min(si, h_ - 1), 0),
                                         te.max(te.min(sj, w_ - 1), 0)], te.const(0, dtype))

    y = te.compute(i64(*shape), element, name="shift")
    sch = Schedule(te.create_prim_func([x, off, y]))
    schedule_parallel(sch)
    return sch.mod["main"]


def offsets_table(offsets: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(offsets, dtype=np.int64).reshape(-1, 2))
