"""Feature maps larger (or smaller) than the engine reads: output tiles with halo, or zeros
appended and cropped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from ..conv import ConvSpec
from ..decline import Decline
from ..legality import check
from ..target import Target
from .channels import ranges_of_sizes
from .limits import MAX_LOWERED_TILES
from .windows import AxisCut, cut_axis


@dataclass(frozen=True)
class TilePlan:
    axes: tuple[int, ...]                               # spatial axes that are tiled
    tiles: tuple[tuple[tuple[int, int], ...], ...]      # per tiled axis: output ranges
    pads: tuple[int, ...]                               # explicit Pad for the tiled axes
    grow: tuple[int, ...] = ()                          # zeros appended to undersized axes
    out_length: tuple[int, ...] = ()                    # the original output extents
    # how the tiles' input windows are cut, chosen from the target's ops: "slice" (one Slice per
    # tile), "split" (one Split per axis: the windows do not overlap, kernel extent <= stride, a
    # 1x1 conv above all) or "split_concat" (one Split at every window boundary, and a Concat of
    # the chunks per overlapping window: a tile's core and the halo it shares with its neighbours)
    form: str = "slice"
    # per tiled axis, per tile: its input window (start, end) over the map (the padded map where
    # the pads are an explicit Pad), and the pads its conv keeps (begin, end): a target without
    # Pad keeps the conv's own pads on the edge tiles
    windows: tuple[tuple[tuple[int, int], ...], ...] = ()
    tile_pads: tuple[tuple[tuple[int, int], ...], ...] = ()
    cuts: tuple[AxisCut, ...] = ()                      # the Split forms' cut per tiled axis

    @property
    def ops(self) -> list[str]:
        """The ops this plan emits."""
        cut = {"slice": ["Slice"], "split": ["Split"], "split_concat": ["Split"]}[self.form]
        return cut + ["Concat"] + (["Pad"] if any(self.pads) else [])


def tile_windows(tiles, span: int, stride: int, size: int, begin: int, end: int,
                 explicit: bool) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """Each tile's input window over an axis of ``size`` samples padded by ``begin``/``end``:
    over the padded axis where the pads are an explicit Pad (``explicit``), else over the axis
    itself, the tile's conv keeping the part of the pads its window reaches (the edge tiles)."""
    windows, pads = [], []
    for a, b in tiles:
        start, stop = a * stride, (b - 1) * stride + span
        if explicit:
            windows.append((start, stop))
            pads.append((0, 0))
            continue
        start, stop = start - begin, stop - begin
        windows.append((max(start, 0), min(stop, size)))
        pads.append((max(-start, 0), max(stop - size, 0)))
    return tuple(windows), tuple(pads)


def axis_limits(spec: ConvSpec, target: Target) -> dict[int, tuple[int, int]]:
    """Per spatial axis the [min, max] input extent the engine reads: its height and width
    rules on the last two axes, and ``max_dim`` (every tensor dimension, e.g. Ethos-U's 65535)
    on every axis; a tile's output is never longer than its input window, so this bounds both."""
    rank, cap = spec.rank, target.conv.max_dim
    limits = {}
    for axis, bounds in ((rank - 2, target.conv.input_height), (rank - 1, target.conv.input_width)):
        if axis >= 0 and bounds is not None:
            limits[axis] = tuple(bounds)
    if cap is not None:
        for axis in range(rank):
            low, high = limits.get(axis, (1, cap))
            limits[axis] = (low, min(high, cap))
    return limits


def plan_tiles(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> TilePlan | Decline:
    """Feature maps larger than the engine takes: cut the output into tiles whose input windows
    (with the kernel's halo) fit, as equal as possible. Maps smaller than it takes (a 1x1
    squeeze-excite map on the K210's 4-pixel minimum) get zeros appended and the extra outputs
    cropped. Exact either way: every kept output reads the same inputs."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("tiling needs a static input size")
    rank = spec.rank
    limits = axis_limits(spec, target)
    axes, tiles, grow, total = [], [], [0] * rank, 1
    for axis in range(rank):
        bounds = limits.get(axis)
        size = spec.input_shape[2 + axis]
        if bounds is not None and size < bounds[0]:
            grow[axis] = bounds[0] - size       # zeros after the end change no kept output
            continue
        if bounds is None or size <= bounds[1]:
            continue
        span, stride = spec.dilated_kernel[axis], spec.strides[axis]
        padded = size + pads[axis] + pads[axis + rank]
        out = (padded - span) // stride + 1
        per_tile = (bounds[1] - span) // stride + 1
        if per_tile < 1:
            return Decline(f"a {span}-wide kernel window does not fit the engine's {bounds[1]} input")
        count = -(-out // per_tile)
        total *= count
        if total > MAX_LOWERED_TILES:
            return Decline(f"{total} tiles would be needed (limit {MAX_LOWERED_TILES} per conv: "
                           f"each is a conv of its own)")
        ranges = ranges_of_sizes([out // count + (1 if i < out % count else 0) for i in range(count)])
        smallest = min(b - a for a, b in ranges)
        if (smallest - 1) * stride + span < bounds[0]:
            return Decline(f"tiles would fall below the engine's minimum input {bounds[0]}")
        axes.append(axis)
        tiles.append(tuple(ranges))
    if not axes and not any(grow):
        return Decline("feature map already within the limits")
    if spec.transposed:
        out_length = tuple(d for d in (spec.output_shape or ())[2:])
    else:           # from the conv itself: a model's declared output shape may be stale
        out_length = tuple((n + pads[a] + pads[a + rank] - spec.dilated_kernel[a])
                           // spec.strides[a] + 1
                           for a, n in enumerate(spec.input_shape[2:]))
    if any(grow):
        if len(out_length) != rank or None in out_length:
            return Decline("growing an undersized map needs a static output size")
        return TilePlan(tuple(axes), tuple(tiles), (0,) * (2 * rank), tuple(grow), out_length)
    return _cut_plan(spec, target, pads, axes, tiles, limits, out_length)


def _cut_plan(spec: ConvSpec, target: Target, pads: tuple[int, ...], axes: list[int],
              tiles: list, limits: dict, out_length: tuple) -> TilePlan | Decline:
    """How the tiles' windows are cut, from the ops the target allows: Slice where it has it,
    else Split (and Concat where windows overlap); the pads an explicit Pad where it has that
    (or nothing is padded), else kept by the edge tiles' convs."""
    rank = spec.rank
    explicit_pad = target.allows_op("Pad") or not any(pads[a] or pads[a + rank] for a in axes)
    explicit, windows, tile_pads = [0] * (2 * rank), [], []
    for axis, ranges in zip(axes, tiles):
        begin, end = pads[axis], pads[axis + rank]
        if explicit_pad:
            explicit[axis], explicit[axis + rank] = begin, end
        spans, kept = tile_windows(ranges, spec.dilated_kernel[axis], spec.strides[axis],
                                   spec.input_shape[2 + axis], begin, end, explicit_pad)
        if any(a >= b for a, b in spans):
            return Decline("a tile would read only padding")
        if any(b - a < limits[axis][0] for a, b in spans):
            return Decline(f"tiles would fall below the engine's minimum input {limits[axis][0]}")
        windows.append(spans)
        tile_pads.append(kept)
    if not explicit_pad:
        broken = _edge_pad_rules(spec, target, pads, axes, tile_pads)
        if broken:
            return Decline(f"the target has no Pad and the edge tiles keeping the conv's pads "
                           f"would break {', '.join(broken)}")
    form, cuts = "slice", ()
    if not target.allows_op("Slice"):
        lengths = [spec.input_shape[2 + a] + (explicit[a] + explicit[a + rank])
                   for a in axes]
        cuts = tuple(cut_axis(w, n) for w, n in zip(windows, lengths))
        for axis, cut in zip(axes, cuts):       # a chunk no tile reads (a gap, the tail) too
            if max(cut.sizes) > limits[axis][1]:
                return Decline(f"a Split chunk of {max(cut.sizes)} would exceed the engine's "
                               f"{limits[axis][1]} on axis {2 + axis}")
        form = "split_concat" if any(c.overlapping for c in cuts) else "split"
    return TilePlan(tuple(axes), tuple(tiles), tuple(explicit), (), out_length, form,
                    tuple(windows), tuple(tile_pads), cuts)


PAD_RULES = ("max_pad", "symmetric_pad", "same_pad_only")


def _edge_pad_rules(spec: ConvSpec, target: Target, pads: tuple[int, ...], axes: list[int],
                    tile_pads: list) -> list[str]:
    """The pad rules some tile's conv would break that the conv itself does not."""
    rank = spec.rank
    own = {v.rule for v in check(spec, target)}
    broken: set[str] = set()
    for combo in itertools.product(*(sorted(set(kept)) for kept in tile_pads)):
        tile = list(pads)
        for axis, (begin, end) in zip(axes, combo):
            tile[axis], tile[axis + rank] = begin, end
        broken |= {v.rule for v in check(replace(spec, pads=tuple(tile), auto_pad="NOTSET"),
                                         target)
                   if v.rule in PAD_RULES and v.rule not in own}
    return sorted(broken)
