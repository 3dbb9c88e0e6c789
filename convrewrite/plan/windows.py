"""Windows of one axis cut without Slice (NVDLA's ONNC has no Slice emitter): one Split of the
axis at every window boundary, and each window the Concat of the consecutive chunks it covers.

Windows that do not overlap (a 1x1 conv, stride = kernel) are single chunks, so the form is one
Split and nothing else; overlapping ones (a tile and its neighbour's halo, a kernel piece's shifted
view) share chunks. Exact: Split and Concat only move samples.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AxisCut:
    """One axis of ``length`` samples cut for the windows ``spans`` (start, end)."""

    spans: tuple[tuple[int, int], ...]
    sizes: tuple[int, ...]                    # the Split's chunk sizes (they cover the axis)
    windows: tuple[tuple[int, ...], ...]      # per window: the chunks it concatenates, in order

    @property
    def overlapping(self) -> bool:
        """Whether some window needs a Concat (it spans more than one chunk)."""
        return any(len(w) > 1 for w in self.windows)


def cut_axis(spans, length: int) -> AxisCut:
    """The Split that cuts an axis at every start and end of ``spans`` (gaps and the unread tail
    become chunks no window reads), and the chunks each window is made of."""
    spans = tuple((int(a), int(b)) for a, b in spans)
    if any(not 0 <= a < b <= length for a, b in spans):
        raise ValueError(f"windows {spans} do not lie within an axis of {length}")
    bounds = sorted({0, length, *(a for a, _ in spans), *(b for _, b in spans)})
    index = {at: i for i, at in enumerate(bounds)}
    sizes = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    windows = tuple(tuple(range(index[a], index[b])) for a, b in spans)
    return AxisCut(spans, sizes, windows)
