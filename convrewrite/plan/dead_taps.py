"""Kernel taps that only ever read padding: which to drop.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..conv import ConvSpec
from ..decline import Decline


@dataclass(frozen=True)
class TrimPlan:
    taps: tuple[tuple[int, int], ...]  # per axis: first and last kernel tap that sees data
    pads: tuple[int, ...]              # the trimmed conv's pads

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(b - a + 1 for a, b in self.taps)


def plan_dead_taps(spec: ConvSpec, pads: tuple[int, ...]) -> TrimPlan | Decline:
    """Kernel taps that only ever read padding add nothing: drop them. A DeepLab ASPP conv with
    dilation 36 on an 8x8 map is, exactly, a 1x1 conv - no dilation, kernel or padding left to
    lower."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("finding taps that only see padding needs a static input size")
    rank, taps, new_pads = spec.rank, [], list(pads)
    for axis in range(rank):
        size, k = spec.input_shape[2 + axis], spec.kernel_shape[axis]
        d, s = spec.dilations[axis], spec.strides[axis]
        begin, end = pads[axis], pads[axis + rank]
        count = (size + begin + end - (k - 1) * d - 1) // s + 1
        live = [t for t in range(k)
                if any(0 <= o * s + t * d - begin < size for o in range(count))]
        if not live:
            return Decline("every tap reads padding only")
        first, last = live[0], live[-1]
        trimmed_begin, trimmed_end = begin - first * d, end - (k - 1 - last) * d
        if trimmed_begin < 0 or trimmed_end < 0:
            first, last, trimmed_begin, trimmed_end = 0, k - 1, begin, end
        taps.append((first, last))
        new_pads[axis], new_pads[axis + rank] = trimmed_begin, trimmed_end
    if all(a == 0 and b == k - 1 for (a, b), k in zip(taps, spec.kernel_shape)):
        return Decline("no kernel tap reads only padding")
    return TrimPlan(tuple(taps), tuple(new_pads))
