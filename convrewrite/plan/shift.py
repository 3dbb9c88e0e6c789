"""Shifts (ShiftNet): the cheapest legal form of a per-channel translation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..conv import dims_text
from ..decline import Decline
from ..target import Target
from .cost import (COPY_ELEMENT_COST_IN_MACS, COPY_NODE_COST_IN_MACS, COSTING_PIXELS,
                   DEPTHWISE_MAC_COST, NODE_COST_IN_MACS, costed_pixels)


@dataclass(frozen=True)
class ShiftRun:
    """Channels [first, stop) all move by ``offset`` (one entry per spatial axis)."""
    first: int
    stop: int
    offset: tuple[int, ...]


def shift_runs(offsets: np.ndarray) -> tuple[ShiftRun, ...]:
    """Contiguous channel runs that share an offset: one Slice+Pad each."""
    runs, start = [], 0
    rows = [tuple(int(v) for v in row) for row in np.asarray(offsets)]
    for c in range(1, len(rows) + 1):
        if c == len(rows) or rows[c] != rows[start]:
            runs.append(ShiftRun(start, c, rows[start]))
            start = c
    return tuple(runs)


def one_hot_geometry(offsets: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The smallest odd kernel and the largest dilation whose taps reach every offset."""
    offsets = np.asarray(offsets)
    kernel, dilation = [], []
    for axis in range(offsets.shape[1]):
        values = np.abs(offsets[:, axis])
        d = int(np.gcd.reduce(values)) if values.any() else 1
        kernel.append(2 * int(values.max()) // d + 1)
        dilation.append(d)
    return tuple(kernel), tuple(dilation)


@dataclass(frozen=True)
class ShiftPlan:
    form: str                        # slice_pad | depthwise | fold
    runs: tuple[ShiftRun, ...]
    kernel: tuple[int, ...]          # one-hot kernel of the depthwise / folded conv
    dilation: tuple[int, ...]
    strategy: str                    # what was chosen and what it beat, for the record


@dataclass(frozen=True)
class FoldSite:
    """The 1x1 conv a shift feeds alone, which could absorb it as a k x k conv."""
    out_channels: int
    pixels_out: int | None


def plan_shift(offsets: np.ndarray, spatial, target: Target, fold: FoldSite | None,
               current: str | None = None) -> ShiftPlan | Decline:
    """Pick the cheapest legal form of a shift. ``current`` names the form it already has (a
    one-hot depthwise conv, or Slice/Pad ops): when that wins, the answer says so as a reason."""
    channels = len(offsets)
    runs = shift_runs(offsets)
    kernel, dilation = one_hot_geometry(offsets)
    taps = math.prod(kernel)
    pixels, known = costed_pixels(spatial)
    costs: dict[str, float] = {}
    why_not: dict[str, str] = {}
    copy_ops = {"Slice", "Pad"} | ({"Concat"} if len(runs) > 1 else set())
    missing = sorted(op for op in copy_ops if not target.allows_op(op))
    if missing:
        why_not["slice_pad"] = f"the target's ops lack {', '.join(missing)}"
    else:
        nodes = 2 if len(runs) == 1 else len(runs) + 2      # see passes.shift.emit_slice_pad
        written = (2 if len(runs) == 1 else 3) * channels * pixels
        costs["slice_pad"] = nodes * COPY_NODE_COST_IN_MACS + written * COPY_ELEMENT_COST_IN_MACS
    if "depthwise" not in target.conv.groups or not target.allows_op("Conv"):
        why_not["depthwise"] = "the engine runs no depthwise convs"
    else:
        costs["depthwise"] = NODE_COST_IN_MACS + DEPTHWISE_MAC_COST * channels * taps * pixels
    if fold is None:
        why_not["fold"] = "no 1x1 conv reads the shift alone"
    elif "regular" not in target.conv.groups or not target.allows_op("Conv"):
        why_not["fold"] = "the engine runs no regular convs"
    else:
        out_pixels = fold.pixels_out if fold.pixels_out is not None else pixels
        costs["fold"] = fold.out_channels * channels * (taps - 1) * out_pixels - NODE_COST_IN_MACS
    wanted = target.rewrite.shift_form
    if wanted != "auto":
        if wanted not in costs:
            return Decline(f"shift_form {wanted} is not possible: {why_not[wanted]}")
        chosen = wanted
    elif not costs:
        return Decline("no legal form: " + "; ".join(f"{k}: {v}" for k, v in why_not.items()))
    else:
        chosen = min(costs, key=lambda k: (costs[k], k != current))
    if chosen == current:
        return Decline(f"already in its cheapest legal form ({current})")
    others = ", ".join(f"{k} {costs[k]:.3g}" for k in sorted(costs) if k != chosen)
    size = "" if known else f", size unknown: costed as {COSTING_PIXELS} pixels"
    detail = {"slice_pad": f"{len(runs)} channel runs, zero FLOPs",
              "depthwise": f"one-hot depthwise {dims_text(kernel)}",
              "fold": f"folded into the next 1x1 conv as {dims_text(kernel)}"}[chosen]
    strategy = f"shift as {chosen} ({detail}; cost {costs[chosen]:.3g} MAC-eq" + \
        (f", rejected {others}" if others else "") + f"{size})"
    return ShiftPlan(chosen, runs, kernel, dilation, strategy)
