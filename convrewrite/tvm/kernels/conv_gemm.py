"""Our CPU conv kernel: a conv as an implicit GEMM over packed weights, and its schedule.

    acc[n, cb, p, v] = Σ_{c, ky, kx} xp[n, c, oy(p)·sy + ky·dy, ox(p)·sx + kx·dx] · wp[cb, c, ky, kx, v]
    y[n, cb·VB + v, oy, ox] = acc[n, cb, oy·OW + ox, v]

``p`` runs over the output pixels (flattened), ``v`` over a block of VB output channels. The
weights are packed once, at build time, as [Cout/VB, Cin, KH, KW, VB] so that the inner loop reads
them as VB/16 contiguous AVX-512 vectors; the input is read by broadcast, one scalar per pixel, at
any stride, so no im2col buffer is written. The micro-kernel keeps an MR-pixel × VB-channel tile of
accumulators in registers (MR·VB/16 + VB/16 + 1 ≤ 32 zmm registers) for the whole reduction over
Cin·KH·KW, then writes the tile back to NCHW, with whatever elementwise ops fusion put after the
conv (bias, ReLU, residual add) applied on the way out. Tiles are spread over the cores.

Padding is a separate stage (a zero-padded copy of the input, with a few extra rows at the bottom
when the last pixel tile runs past the map), so the inner loop has no bounds checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import numpy as np

from .. import require_tvm

LANES = 16                 # float32 lanes of an AVX-512 register
REGISTERS = 32             # zmm registers: MR·NV accumulators + NV weight vectors + 1 broadcast
ACC_BLOCK = "conv_gemm"    # the names the schedule finds the kernel's blocks by
PAD_BLOCK = "conv_gemm_pad"
OUT_BLOCK = "conv_gemm_out"
TILE_MR, TILE_VB = "conv_gemm_mr", "conv_gemm_vb"    # annotations of ACC_BLOCK


@dataclass(frozen=True)
class ConvGeometry:
    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)      # top, left, bottom, right

    @property
    def out_size(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, left, bottom, right = self.pads
        return ((self.height + top + bottom - (kh - 1) * dh - 1) // sh + 1,
                (self.width + left + right - (kw - 1) * dw - 1) // sw + 1)

    @property
    def pixels(self) -> int:
        oh, ow = self.out_size
        return oh * ow

    @property
    def macs(self) -> int:
        kh, kw = self.kernel
        return self.batch * self.pixels * self.out_channels * self.in_channels * kh * kw


@dataclass(frozen=True)
class Tile:
    mr: int      # output pixels per micro-tile
    nv: int      # 16-lane vectors of output channels per micro-tile (VB = 16·nv)

    @property
    def vb(self) -> int:
        return LANES * self.nv


# (vectors of output channels, most pixels) in order of preference, measured on this CPU
# (AVX-512, 2 cores) over ResNet-50's conv shapes: 2 vectors × 7-8 pixels was best or within 5%
# of the best tile everywhere; larger tiles (14×2, 4×4) lost up to 40% on some shapes.
TILE_PREFERENCE = ((2, 8), (1, 16), (4, 4), (3, 5))


def valid_pixel_tile(geom: ConvGeometry, mr: int) -> bool:
    """A pixel tile lies within one output row or covers whole rows (else TVM's region analysis
    widens it to whole rows), and divides the pixel count (a ragged tile would put a bounds
    check in the write-back)."""
    width = geom.out_size[1]
    return geom.pixels % mr == 0 and (width % mr == 0 or mr % width == 0)


def choose_tile(geom: ConvGeometry, valid=valid_pixel_tile) -> Tile:
    """The register tile: the first of TILE_PREFERENCE whose channel block divides Cout (where
    any does) with a valid pixel tile (``valid(geom, mr)``) of at least 4; else the largest valid
    tile. Every tile fits the registers: MR·NV accumulators + NV weight vectors + 1 broadcast
    ≤ 32."""
    fits = [(nv, most) for nv, most in TILE_PREFERENCE if geom.out_channels % (LANES * nv) == 0]
    candidates = []
    for nv, most in fits or TILE_PREFERENCE:
        mr = max(m for m in range(1, most + 1) if valid(geom, m))
        assert mr * nv + nv + 1 <= REGISTERS
        if mr >= 4:
            return Tile(mr, nv)
        candidates.append(Tile(mr, nv))
    return max(candidates, key=lambda t: t.mr * t.nv)


def pack_weight(weight: np.ndarray, tile: Tile) -> np.ndarray:
    """[Cout, Cin, KH, KW] → [ceil(Cout/VB), Cin, KH, KW, VB], zero-filled past Cout."""
    cout = weight.shape[0]
    blocks = ceil(cout / tile.vb)
    padded = np.zeros((blocks * tile.vb, *weight.shape[1:]), dtype=weight.dtype)
    padded[:cout] = weight
    return np.ascontiguousarray(
        padded.reshape(blocks, tile.vb, *weight.shape[1:]).transpose(0, 2, 3, 4, 1))


def i64(*extents: int) -> tuple:
    """Shapes as int64, like the TE functions TVM's legalization makes (fusion needs them equal)."""
    tvm = require_tvm()
    return tuple(tvm.tirx.const(int(e), "int64") for e in extents)


def conv_te(geom: ConvGeometry, tile: Tile, dtype: str = "float32"):
    """The TE tensors (x, packed w, y) of the kernel."""
    require_tvm()
    from tvm import te
    n_, c_, h_, w_ = geom.batch, geom.in_channels, geom.height, geom.width
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.strides, geom.dilations
    top, left, bottom, right = geom.pads
    oh, ow = geom.out_size
    pixels = ceil(geom.pixels / tile.mr) * tile.mr
    # rows the last (ragged) pixel tile reads: pad the bottom far enough for them
    last_row = ((pixels - 1) // ow) * sh + (kh - 1) * dh
    bottom = max(bottom, last_row + 1 - (h_ + top))
    blocks = ceil(geom.out_channels / tile.vb)
    x = te.placeholder(i64(n_, c_, h_, w_), dtype, name="x")
    wp = te.placeholder(i64(blocks, c_, kh, kw, tile.vb), dtype, name="w_packed")
    if top or left or bottom or right:
        zero = te.const(0, dtype)
        xp = te.compute(
            i64(n_, c_, h_ + top + bottom, w_ + left + right),
            lambda n, c, i, j: te.if_then_else(
                te.all(i >= top, i < top + h_, j >= left, j < left + w_),
                x[n, c, i - top, j - left], zero),
            name=PAD_BLOCK)
    else:
        xp = x
    # reduction axes of extent 1 are left out: the schedule finds the loops it expects
    rc = te.reduce_axis(i64(0, c_), "rc")
    ry = te.reduce_axis(i64(0, kh), "ry") if kh > 1 else None
    rx = te.reduce_axis(i64(0, kw), "rx") if kw > 1 else None
    axes = [a for a in (rc, ry, rx) if a is not None]
    ky = ry if ry is not None else 0
    kx = rx if rx is not None else 0
    acc = te.compute(
        i64(n_, blocks, pixels, tile.vb),
        lambda n, cb, p, v: te.sum(
            xp[n, rc, (p // ow) * sh + ky * dh, (p % ow) * sw + kx * dw] * wp[cb, rc, ky, kx, v],
            axis=axes),
        name=ACC_BLOCK, attrs={TILE_MR: tile.mr, TILE_VB: tile.vb})
    y = te.compute(
        i64(n_, geom.out_channels, oh, ow),
        lambda n, co, i, j: acc[n, co // tile.vb, i * ow + j, co % tile.vb],
        name=OUT_BLOCK)
    return x, wp, y


def conv_prim_func(geom: ConvGeometry, tile: Tile, dtype: str = "float32"):
    """The kernel as an unscheduled PrimFunc (x, packed w) -> y."""
    require_tvm()
    from tvm import te
    x, wp, y = conv_te(geom, tile, dtype)
    return te.create_prim_func([x, wp, y])


def schedule_conv(sch) -> None:
    """Schedule the kernel's blocks in ``sch`` (a tvm.s_tir.Schedule over a PrimFunc holding
    them, possibly fused with elementwise consumers); the tile is read from the annotations."""
    acc = sch.get_sblock(ACC_BLOCK)
    out = sch.get_sblock(OUT_BLOCK)
    block = sch.get(acc)
    mr, vb = int(block.annotations[TILE_MR]), int(block.annotations[TILE_VB])
    reductions = len([iv for iv in block.iter_vars if iv.iter_type == 2 and iv.dom.extent != 1])
    _inline_epilogue(sch, out)
    n, co, i, j = sch.get_loops(out)[-4:]
    cb, v = sch.split(co, factors=[None, vb])
    po, pi = sch.split(sch.fuse(i, j), factors=[None, mr])
    sch.reorder(n, cb, po, v, pi)
    sch.compute_at(acc, po)
    sch.set_scope(acc, 0, "local")
    # under po: [p (when mr > 1)], v, then the reduction loops (those of extent > 1)
    inner = sch.get_loops(acc)[-(reductions + 1 + (mr > 1)):]
    p = inner[0] if mr > 1 else None
    vv, rc, *rest = inner[1:] if mr > 1 else inner
    vo, vi = sch.split(vv, factors=[None, LANES])
    sch.reorder(rc, *rest, *([p] if p is not None else []), vo, vi)
    if p is not None:
        sch.unroll(p)
    sch.unroll(vo)
    sch.vectorize(vi)
    sch.parallel(sch.fuse(n, cb, po))
    sch.decompose_reduction(acc, rc)
    sch.unroll(pi)
    try:
        pad = sch.get_sblock(PAD_BLOCK)
    except Exception:       # noqa: BLE001 - no padding stage: nothing to schedule
        return
    pn, pc, _, pj = sch.get_loops(pad)
    sch.parallel(sch.fuse(pn, pc))
    if int(sch.get(pj).extent) <= 4 * LANES:
        sch.vectorize(pj)       # whole padded rows at once (LLVM splits them into registers)


def _inline_epilogue(sch, block) -> None:
    """Fold elementwise consumers (bias, ReLU, residual add) into the write-back: only those
    that read the conv's output at exactly their own position (a strided slice or a pad that
    fusion also put here is left as its own block)."""
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1 or not _pointwise_reader(sch, consumers[0], block):
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:   # noqa: BLE001 - TVM refuses it: it stays a block
            return


def _pointwise_reader(sch, consumer, producer) -> bool:
    written = sch.get(producer).writes[0].source
    info = sch.get(consumer)
    if [int(d) for d in info.writes[0].source.shape] != [int(d) for d in written.shape]:
        return False
    own = [iv.var for iv in info.iter_vars]
    for region in info.reads:
        if region.source.same_as(written):
            if len(region.region) != len(own) or any(
                    not r.min.same_as(v) or int(r.extent) != 1
                    for r, v in zip(region.region, own)):
                return False
    return all(iv.iter_type == 0 for iv in info.iter_vars)
