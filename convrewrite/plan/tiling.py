"""Feature maps larger (or smaller) than the engine reads: output tiles with halo, or zeros
appended and cropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..conv import ConvSpec
from ..decline import Decline
from ..target import Target
from .channels import ranges_of_sizes


@dataclass(frozen=True)
class TilePlan:
    axes: tuple[int, ...]                               # spatial axes that are tiled
    tiles: tuple[tuple[tuple[int, int], ...], ...]      # per tiled axis: output ranges
    pads: tuple[int, ...]                               # explicit Pad for the tiled axes
    grow: tuple[int, ...] = ()                          # zeros appended to undersized axes
    out_length: tuple[int, ...] = ()                    # the original output extents
    # per tiled axis, where the tiles' input windows can be cut by one Split (they do not
    # overlap: the kernel's extent is at most its stride, a 1x1 stride-1 conv above all): the
    # Split's chunk sizes over the padded axis, and which chunk is each tile's window
    split_sizes: tuple[tuple[int, ...], ...] | None = None
    split_windows: tuple[tuple[int, ...], ...] | None = None


def window_split(tiles, span: int, stride: int, padded: int):
    """The Split that cuts a padded axis of ``padded`` samples into the tiles' input windows
    (gaps and the unread tail become chunks no tile reads), or None where windows overlap."""
    if span > stride:
        return None
    sizes, windows, at = [], [], 0
    for a, b in tiles:
        start, end = a * stride, (b - 1) * stride + span
        if start > at:
            sizes.append(start - at)
        windows.append(len(sizes))
        sizes.append(end - start)
        at = end
    if padded > at:
        sizes.append(padded - at)
    return tuple(sizes), tuple(windows)


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
    axes, tiles, grow = [], [], [0] * rank
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
        ranges = ranges_of_sizes([out // count + (1 if i < out % count else 0) for i in range(count)])
        smallest = min(b - a for a, b in ranges)
        if (smallest - 1) * stride + span < bounds[0]:
            return Decline(f"tiles would fall below the engine's minimum input {bounds[0]}")
        axes.append(axis)
        tiles.append(tuple(ranges))
    if not axes and not any(grow):
        return Decline("feature map already within the limits")
    explicit = [0] * (2 * rank)
    for axis in axes:
        explicit[axis], explicit[axis + rank] = pads[axis], pads[axis + rank]
    if spec.transposed:
        out_length = tuple(d for d in (spec.output_shape or ())[2:])
    else:           # from the conv itself: a model's declared output shape may be stale
        out_length = tuple((n + pads[a] + pads[a + rank] - spec.dilated_kernel[a])
                           // spec.strides[a] + 1
                           for a, n in enumerate(spec.input_shape[2:]))
    if any(grow) and (len(out_length) != rank or None in out_length):
        return Decline("growing an undersized map needs a static output size")
    cuts = [window_split(t, spec.dilated_kernel[a], spec.strides[a],
                         spec.input_shape[2 + a] + pads[a] + pads[a + rank])
            for a, t in zip(axes, tiles)]
    split = None if not axes or None in cuts else cuts
    return TilePlan(tuple(axes), tuple(tiles), tuple(explicit), tuple(grow), out_length,
                    None if split is None else tuple(c[0] for c in split),
                    None if split is None else tuple(c[1] for c in split))
