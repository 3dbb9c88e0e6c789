"""Planners for the conv variants (shift, channel shuffle, channel-wise conv, depth multiplier):
pure functions over channel counts, offsets and the target, shared by every emitter.

Costs are in MAC-equivalents like ``plan``'s (one MAC of a dense conv), measured on onnxruntime
CPU on this machine kind (benchmarks/variants.py prints the figures they come from): a dense 1x1
conv runs ~0.01 ns/MAC; a one-hot depthwise 3x3 conv ~0.04-0.08 ns/MAC
(``DEPTHWISE_MAC_COST``); copies and node overheads are ``plan``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .conv import ConvSpec, dims_text
from .legality import check
from .plan import (COPY_ELEMENT_COST_IN_MACS, COPY_NODE_COST_IN_MACS, COSTING_PIXELS,
                   NODE_COST_IN_MACS)
from .target import Target

DEPTHWISE_MAC_COST = 4


def _pixels(spatial) -> tuple[int, bool]:
    """Pixels of a map, and whether the size was known (else COSTING_PIXELS is used)."""
    if spatial is None or any(not isinstance(d, int) for d in spatial):
        return COSTING_PIXELS, False
    return math.prod(spatial), True


# ---------------------------------------------------------------- shift

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
               current: str | None = None) -> ShiftPlan | str:
    """Pick the cheapest legal form of a shift. ``current`` names the form it already has (a
    one-hot depthwise conv, or Slice/Pad ops): when that wins, the answer says so as a reason."""
    channels = len(offsets)
    runs = shift_runs(offsets)
    kernel, dilation = one_hot_geometry(offsets)
    taps = math.prod(kernel)
    pixels, known = _pixels(spatial)
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
            return f"shift_form {wanted} is not possible: {why_not[wanted]}"
        chosen = wanted
    elif not costs:
        return "no legal form: " + "; ".join(f"{k}: {v}" for k, v in why_not.items())
    else:
        chosen = min(costs, key=lambda k: (costs[k], k != current))
    if chosen == current:
        return f"already in its cheapest legal form ({current})"
    others = ", ".join(f"{k} {costs[k]:.3g}" for k in sorted(costs) if k != chosen)
    size = "" if known else f", size unknown: costed as {COSTING_PIXELS} pixels"
    detail = {"slice_pad": f"{len(runs)} channel runs, zero FLOPs",
              "depthwise": f"one-hot depthwise {dims_text(kernel)}",
              "fold": f"folded into the next 1x1 conv as {dims_text(kernel)}"}[chosen]
    strategy = f"shift as {chosen} ({detail}; cost {costs[chosen]:.3g} MAC-eq" + \
        (f", rejected {others}" if others else "") + f"{size})"
    return ShiftPlan(chosen, runs, kernel, dilation, strategy)


# ---------------------------------------------------------------- channel selections (shuffles)

@dataclass(frozen=True)
class SelectionPlan:
    form: str          # fold | gather | conv
    strategy: str


def fold_growth(consumers: list[ConvSpec], selected: int, channels: int) -> int:
    """MACs added by folding a selection of ``selected`` of ``channels`` channels into the
    dense convs reading it: each then reads all ``channels`` (zero for a permutation)."""
    total = 0
    for spec in consumers:
        per_input = spec.macs // max(spec.in_channels, 1) if spec.macs is not None else 0
        total += per_input * (channels - selected)
    return total


def plan_selection(selected: int, base_channels: int, spatial, folded_macs: int | None,
                   target: Target) -> SelectionPlan:
    """How a consumer set gets ``x[:, src]`` once the shuffle is gone. ``folded_macs`` is the MAC
    growth of absorbing it into the consumers' weights (None: they cannot): 0 for a permutation
    into dense convs, more when a selection widens a conv to all of ``x``'s channels."""
    pixels, _ = _pixels(spatial)
    costs = {}
    if folded_macs is not None:
        costs["fold"] = folded_macs
    if target.allows_op("Gather"):
        costs["gather"] = COPY_NODE_COST_IN_MACS + selected * pixels * COPY_ELEMENT_COST_IN_MACS
    if "regular" in target.conv.groups and target.allows_op("Conv"):
        costs["conv"] = NODE_COST_IN_MACS + selected * base_channels * pixels
    if not costs:
        return SelectionPlan("gather", "gather (no form is in the target's ops; kept the cheapest)")
    chosen = min(costs, key=lambda k: (costs[k], ("fold", "gather", "conv").index(k)))
    others = ", ".join(f"{k} {costs[k]:.3g}" for k in costs if k != chosen)
    words = {"fold": "folded into the consumers' weights", "gather": "a Gather on the channels",
             "conv": "a 1x1 one-hot permutation conv"}[chosen]
    return SelectionPlan(chosen, f"{words} (cost {costs[chosen]:.3g} MAC-eq"
                         + (f"; rejected {others}" if others else "") + ")")


# ---------------------------------------------------------------- channel-wise conv

@dataclass(frozen=True)
class ChannelwisePlan:
    form: str                  # conv (Conv over the channel axis) | dense (1x1 Toeplitz conv)
    out_channels: int
    strategy: str


def channelwise_out_channels(channels: int, kernel: int, stride: int, pads: tuple[int, int]) -> int:
    return (channels + pads[0] + pads[1] - kernel) // stride + 1


def plan_channelwise(channels: int, kernel: int, stride: int, pads: tuple[int, int], spatial,
                     target: Target, dtype: str = "float32") -> ChannelwisePlan | str:
    """A channel-wise conv as a 2-D conv sliding over the channel axis (kernel ``kernel`` x 1 on
    a [N, 1, C, H*W] view) or as one 1x1 conv with a banded weight: fewer MACs against fewer,
    more legal nodes; forms the target rejects are costed last."""
    out = channelwise_out_channels(channels, kernel, stride, pads)
    if out < 1:
        return f"kernel {kernel} is wider than {channels} channels plus padding"
    pixels, known = _pixels(spatial)
    flat = pixels if known else None
    sliding = ConvSpec("channelwise", "Conv", 1, 1, 1, (kernel, 1), (stride, 1), (1, 1),
                       (pads[0], 0, pads[1], 0), input_shape=(1, 1, channels, flat),
                       output_shape=(1, 1, out, flat), dtype=dtype)
    dense = ConvSpec("channelwise", "Conv", channels, out, 1, (1, 1), (1, 1), (1, 1), (0,) * 4,
                     input_shape=(1, channels, *(spatial or (None, None))),
                     output_shape=(1, out, *(spatial or (None, None))), dtype=dtype)
    options = {}
    if target.allows_op("Reshape"):
        options["conv"] = (len(check(sliding, target)), 2 * NODE_COST_IN_MACS + out * kernel * pixels)
    options["dense"] = (len(check(dense, target)), out * channels * pixels)
    chosen = min(options, key=lambda k: options[k])
    others = ", ".join(f"{k}: {options[k][0]} violations, {options[k][1]:.3g} MAC-eq"
                       for k in options if k != chosen)
    words = {"conv": f"a {kernel}x1 conv over the channel axis of a [N, 1, C, H*W] view",
             "dense": "one 1x1 conv with a banded weight"}[chosen]
    return ChannelwisePlan(chosen, out, f"{words}" + (f" (rejected {others})" if others else ""))


# ---------------------------------------------------------------- depth multiplier

@dataclass(frozen=True)
class MultiplierPlan:
    form: str            # gather (repeat the input channels) | conv (a 1x1 one-hot repeat conv)
    strategy: str


def plan_depth_multiplier(spec: ConvSpec, target: Target) -> MultiplierPlan | str:
    """A depthwise conv with multiplier m > 1 equals a multiplier-1 depthwise conv over the input
    with each channel repeated m times in place: channel c*m + j of the repeat is channel c."""
    if spec.group_form != "depthwise" or spec.depth_multiplier == 1:
        return "not a depthwise conv with a multiplier"
    if spec.transposed:
        return "ConvTranspose multipliers are not lowered"
    if "depthwise" not in target.conv.groups:
        return "the engine runs no depthwise convs (the group lowering handles this)"
    m, channels = spec.depth_multiplier, spec.in_channels
    pixels, _ = _pixels(spec.input_shape[2:] if spec.input_shape else None)
    repeated = channels * m * pixels
    if target.allows_op("Gather"):
        return MultiplierPlan("gather", f"input channels repeated x{m} by a Gather, then a "
                              f"multiplier-1 depthwise conv over {channels * m} channels "
                              f"({repeated * COPY_ELEMENT_COST_IN_MACS:.3g} MAC-eq of copying)")
    if "regular" in target.conv.groups:
        return MultiplierPlan("conv", f"input channels repeated x{m} by a 1x1 one-hot conv "
                              f"({repeated * channels:.3g} MACs), then a multiplier-1 depthwise conv")
    return "neither Gather nor regular convs are available to repeat the input channels"
