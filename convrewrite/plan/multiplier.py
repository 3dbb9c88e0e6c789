"""Depthwise convs with a channel multiplier > 1: how to repeat the input channels.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..conv import ConvSpec
from ..decline import Decline
from ..target import Target
from .cost import COPY_ELEMENT_COST_IN_MACS, costed_pixels


@dataclass(frozen=True)
class MultiplierPlan:
    form: str            # gather (repeat the input channels) | conv (a 1x1 one-hot repeat conv)
    strategy: str


def plan_depth_multiplier(spec: ConvSpec, target: Target) -> MultiplierPlan | Decline:
    """A depthwise conv with multiplier m > 1 equals a multiplier-1 depthwise conv over the input
    with each channel repeated m times in place: channel c*m + j of the repeat is channel c."""
    if spec.group_form != "depthwise" or spec.depth_multiplier == 1:
        return Decline("not a depthwise conv with a multiplier")
    if spec.transposed:
        return Decline("ConvTranspose multipliers are not lowered")
    if "depthwise" not in target.conv.groups:
        return Decline("the engine runs no depthwise convs (the group lowering handles this)")
    m, channels = spec.depth_multiplier, spec.in_channels
    pixels, _ = costed_pixels(spec.input_shape[2:] if spec.input_shape else None)
    repeated = channels * m * pixels
    if target.allows_op("Gather"):
        return MultiplierPlan("gather", f"input channels repeated x{m} by a Gather, then a "
                              f"multiplier-1 depthwise conv over {channels * m} channels "
                              f"({repeated * COPY_ELEMENT_COST_IN_MACS:.3g} MAC-eq of copying)")
    if "regular" in target.conv.groups:
        return MultiplierPlan("conv", f"input channels repeated x{m} by a 1x1 one-hot conv "
                              f"({repeated * channels:.3g} MACs), then a multiplier-1 depthwise conv")
    return Decline("neither Gather nor regular convs are available to repeat the input channels")
