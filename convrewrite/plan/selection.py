"""Channel selections (what a channel shuffle leaves): folded into the convs reading them, a
Gather, or a one-hot 1x1 conv.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..conv import ConvSpec
from ..target import Target
from .cost import (COPY_ELEMENT_COST_IN_MACS, COPY_NODE_COST_IN_MACS, NODE_COST_IN_MACS,
                   costed_pixels)


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
    pixels, _ = costed_pixels(spatial)
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
