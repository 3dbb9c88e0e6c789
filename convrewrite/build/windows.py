"""Emit the windows of ``plan.windows.AxisCut``s over several axes, nested: the windows of the
first axis are cut along the next, and so on. Builder calls only (Split and Concat)."""

from __future__ import annotations

from typing import Callable

from ..plan.channels import ranges_of_sizes
from ..plan.windows import AxisCut


def cut_windows(b, x, axes: list[int], cuts: list[AxisCut],
                stem: Callable[[int, tuple], str]) -> dict[tuple[int, ...], object]:
    """Every window of the product of ``cuts`` (one per tensor axis in ``axes``), keyed by its
    window index per axis. ``stem(depth, prefix)`` names the Split of depth ``depth`` taken of
    the window ``prefix`` of the axes before it; a window's Concat is ``{stem}/window.{j}``."""
    pieces: dict = {(): x}
    for depth, (axis, cut) in enumerate(zip(axes, cuts)):
        level: dict = {}
        for prefix, tensor in pieces.items():
            name = stem(depth, prefix)
            chunks = b.split_axis(tensor, axis, ranges_of_sizes(list(cut.sizes)), name, True, "")
            for j, window in enumerate(cut.windows):
                parts = [chunks[c] for c in window]
                level[prefix + (j,)] = parts[0] if len(parts) == 1 else \
                    _concat(b, parts, axis, cut.spans[j], f"{name}/window.{j}")
        pieces = level
    return pieces


def _concat(b, parts: list, axis: int, span: tuple[int, int], name: str):
    """The Concat of a window's chunks, its shape set (the next legality check reads it)."""
    shape = b.shape(parts[0])
    if shape is not None:
        shape = list(shape)
        shape[axis] = span[1] - span[0]
    return b.concat(parts, axis, name, shape=shape)
