"""The shift fused into the following 1×1 conv (SEEDS.md §3): the shift is an address offset in the
GEMM's loads, the shifted tensor is never written, and the input is read where it lies (no
zero-padded copy).

    Z[n, co, y, x] = Σ_c W[co, c] · X[n, c, y + dy(c), x + dx(c)]      (0 outside the map)

It is our implicit-GEMM conv kernel (``conv_gemm``: packed weights, an MR-pixel × VB-channel tile
of accumulators in registers, tiles over the cores) written directly in TIR, because the borders
need a per-tile decision that TE cannot express:

* an **interior** tile (every channel's displaced reads land inside the map: rows
  ``hy ≤ y < H − hy``, columns ``hx ≤ x0``, ``x0 + MR + hx ≤ W``) runs the plain 1×1 inner loop,
  each channel's loads displaced by one flat offset ``dy·W + dx`` from an int64 [C] table;
* a **border** tile walks the channel runs that share an offset (``plan.shift.shift_runs``,
  the ONNX lowering's own runs; an int64 [R, 4] table of first, stop, dy, dx): a run whose row
  leaves the map is skipped; otherwise its loads are clamped into the map, and the few pixels of
  the tile whose column can leave it (the first and last ``hx``) get their accumulators back
  after the run where they did leave it (a saved copy, restored by a select). No zeros are
  written anywhere, and nothing is read outside the input.

Pixel tiles lie within one row (MR divides W). The function is opaque to TVM's fusion (it is
already scheduled), so the conv's bias add, residual add and ReLU that follow it are folded into
its write-back here (``epilogue``: the steps in program order; ``shift_fusion`` finds them), as
our plain conv kernel's schedule folds them into its own. ``shift_prim_func`` is the shift on its
own (for the unfused comparison and as a reference).
"""

from __future__ import annotations

from math import ceil

import numpy as np

from ...plan.shift import shift_runs
from .. import require_tvm
from ..cpu_schedule import SCHEDULED, schedule_parallel
from .conv_gemm import LANES, ConvGeometry, Tile, choose_tile, i64


def halo(offsets: np.ndarray) -> tuple[int, int]:
    """The largest |dy| and |dx|: how far a read can leave the map."""
    offsets = np.asarray(offsets)
    if offsets.size == 0:
        return 0, 0
    return int(np.abs(offsets[:, 0]).max()), int(np.abs(offsets[:, 1]).max())


def shift_conv_geometry(batch: int, channels: int, height: int, width: int,
                        out_channels: int) -> ConvGeometry:
    return ConvGeometry(batch, channels, height, width, out_channels, (1, 1))


def row_tile(geom: ConvGeometry, mr: int) -> bool:
    """A pixel tile that lies within one row."""
    return geom.width % mr == 0


def shift_tables(offsets: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's two int64 tables: per channel the flat offset ``dy·W + dx`` (interior
    tiles), and per run of channels sharing an offset (first, stop, dy, dx) (border tiles)."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    flat = np.ascontiguousarray(offsets[:, 0] * width + offsets[:, 1])
    runs = np.array([[r.first, r.stop, *r.offset] for r in shift_runs(offsets)],
                    dtype=np.int64).reshape(-1, 4)
    return flat, runs


EPILOGUE_STEPS = ("bias", "residual", "relu")


def shift_conv_prim_func(geom: ConvGeometry, offsets: np.ndarray, tile: Tile | None = None,
                         dtype: str = "float32", epilogue: tuple[str, ...] = ()):
    """The fused kernel (x, flat offsets [C], runs [R, 4], packed w, [bias [Co]],
    [residual [N, Co, H, W]]) -> z, scheduled; its tile. ``shift_tables`` makes the tables,
    ``conv_gemm.pack_weight`` the weight; ``epilogue`` lists the steps applied on the way out,
    in order, each of ``EPILOGUE_STEPS`` at most once."""
    if any(step not in EPILOGUE_STEPS for step in epilogue) or len(set(epilogue)) < len(epilogue):
        raise ValueError(f"epilogue steps must be distinct ones of {EPILOGUE_STEPS}: {epilogue}")
    require_tvm()
    import tvm
    tile = tile or choose_tile(geom, row_tile)
    if not row_tile(geom, tile.mr):
        raise ValueError(f"pixel tile {tile.mr} does not divide the width {geom.width}")
    source = _kernel_source(geom, tile, halo(offsets), len(shift_runs(offsets)), dtype,
                            tuple(epilogue))
    func = tvm.script.from_source(source)
    return func.with_attr(SCHEDULED, 1), tile


def _kernel_source(geom: ConvGeometry, tile: Tile, reach: tuple[int, int], runs: int,
                   dtype: str, epilogue: tuple[str, ...]) -> str:
    """TVMScript of the fused kernel, specialised to the shapes (see the module docstring)."""
    n_, c_, h_, w_, co = geom.batch, geom.in_channels, geom.height, geom.width, geom.out_channels
    mr, nv, vb = tile.mr, tile.nv, tile.vb
    hy, hx = reach
    blocks, per_row = ceil(co / vb), w_ // mr
    edge = [i for i in range(mr) if i < hx or i >= mr - hx]   # pixels whose column can leave

    def k(v) -> str:
        return f"T.int64({v})"

    def lanes(indent: int, stmt: str) -> list[str]:
        """``stmt`` once per 16-lane vector of the channel block, vectorised over ``vi``
        ({A}: that vector's accumulators, {S}: its saved copy, {V}: the lane's channel)."""
        pad = " " * indent
        return [line for v in range(nv) for line in (
            f"{pad}for vi in T.vectorized({k(LANES)}):",
            f"{pad}    " + stmt.format(A=f"acc{v}", S=f"saved{v}", V=f"{k(v * LANES)} + vi"))]

    def channel(v: int) -> str:
        return f"cb * {k(vb)} + {k(v * LANES)} + vi"

    def finish(value: str, ch: str) -> str:
        """The write-back value: the accumulator through the epilogue steps."""
        for step in epilogue:
            value = {"bias": f"({value} + bias[{ch}])",
                     "residual": f"({value} + residual[n, {ch}, y, x0 + i])",
                     "relu": f"T.max({value}, T.{dtype}(0))"}[step]
        return value

    # interior tiles: the plain 1x1 inner loop, loads displaced by the channel's flat offset
    load = f"xf[((n * {k(c_)} + c) * {k(h_)} + y) * {k(w_)} + x0 + flat[c] + i]"
    interior = [f"            for c in range({k(c_)}):",
                f"                for i in T.unroll({k(mr)}):",
                *lanes(20, f"{{A}}[i, vi] = {{A}}[i, vi] + {load} * w[cb, c, 0, 0, {{V}}]")]
    # border tiles: run by run, clamped loads, the edge pixels restored where they left the map
    col = "x0 + runs[r, 3] + {}"
    update = []
    for i in range(mr):
        at = col.format(k(i))
        if i in edge:
            at = f"T.max(T.min({at}, {k(w_ - 1)}), {k(0)})"
        update += lanes(24, f"{{A}}[{k(i)}, vi] = {{A}}[{k(i)}, vi] + "
                            f"x[n, c, y + runs[r, 2], {at}] * w[cb, c, 0, 0, {{V}}]")
    save, restore = [], []
    for j, i in enumerate(edge):
        at = col.format(k(i))
        save += lanes(20, f"{{S}}[{k(j)}, vi] = {{A}}[{k(i)}, vi]")
        restore += lanes(20, f"{{A}}[{k(i)}, vi] = T.Select({k(0)} <= {at} and {at} < {k(w_)}, "
                             f"{{A}}[{k(i)}, vi], {{S}}[{k(j)}, vi])")
    border = [f"            for r in range({k(runs)}):",
              f"                if {k(0)} <= y + runs[r, 2] and y + runs[r, 2] < {k(h_)}:",
              *save,
              "                    for c in range(runs[r, 0], runs[r, 1]):",
              *update,
              *restore]
    inside = (f"{k(hy)} <= y and y < {k(h_ - hy)} and {k(hx)} <= x0 and "
              f"x0 + {k(mr + hx)} <= {k(w_)}")
    # one parallel loop over all tiles (a second loop would be a second thread-pool launch,
    # which costs more than the borders on maps this size)
    body = [f"    for t in T.parallel({k(n_ * blocks * h_ * per_row)}):",
            *[f'        {name}{v} = T.alloc_local(({k(rows)}, {k(LANES)}), "{dtype}")'
              for name, rows in (("acc", mr), ("saved", max(1, len(edge))))
              for v in range(nv)],
            f"        n = T.meta_var(t // {k(blocks * h_ * per_row)})",
            f"        cb = T.meta_var(t // {k(h_ * per_row)} % {k(blocks)})",
            f"        y = T.meta_var(t // {k(per_row)} % {k(h_)})",
            f"        x0 = T.meta_var(t % {k(per_row)} * {k(mr)})",
            f"        for i in T.unroll({k(mr)}):",
            *lanes(12, f"{{A}}[i, vi] = T.{dtype}(0)"),
            f"        if {inside}:",
            *interior,
            "        else:",
            *border,
            *[line for v in range(nv) for line in (
                f"        for vi in range({k(LANES)}):",
                f"            if cb * {k(vb)} + {k(v * LANES)} + vi < {k(co)}:",
                f"                for i in T.unroll({k(mr)}):",
                f"                    z[n, {channel(v)}, y, x0 + i] = "
                + finish(f"acc{v}[i, vi]", channel(v)))]]
    buffer = 'T.Buffer(({}), "{}")'.format
    return "\n".join([
        "@T.prim_func(s_tir=True)",
        f"def main(x: {buffer(', '.join(map(k, (n_, c_, h_, w_))), dtype)},",
        f"         flat: {buffer(k(c_) + ',', 'int64')},",
        f"         runs: {buffer(f'{k(runs)}, {k(4)}', 'int64')},",
        f"         w: {buffer(', '.join(map(k, (blocks, c_, 1, 1, vb))), dtype)},",
        *([f"         bias: {buffer(k(co) + ',', dtype)},"] if "bias" in epilogue else []),
        *([f"         residual: {buffer(', '.join(map(k, (n_, co, h_, w_))), dtype)},"]
          if "residual" in epilogue else []),
        f"         z: {buffer(', '.join(map(k, (n_, co, h_, w_))), dtype)}):",
        '    T.func_attr({"tirx.noalias": True})',
        f'    xf = T.decl_buffer(({k(n_ * c_ * h_ * w_)},), "{dtype}", data=x.data)',
        *body, ""])


def shift_prim_func(shape: tuple[int, int, int, int], dtype: str = "float32"):
    """The shift alone: (x, offsets [C, 2] int64) -> y, scheduled (parallel over channels,
    the row loop vectorised where it is a multiple of 16)."""
    require_tvm()
    from tvm import te
    from tvm.s_tir import Schedule
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
