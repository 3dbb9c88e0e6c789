"""Channel-wise convs (ChannelNets): a conv over the channel axis, or one banded 1x1 conv.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..conv import ConvSpec
from ..decline import Decline
from ..legality import check
from ..target import Target
from .cost import NODE_COST_IN_MACS, costed_pixels


@dataclass(frozen=True)
class ChannelwisePlan:
    form: str                  # conv (Conv over the channel axis) | dense (1x1 Toeplitz conv)
    out_channels: int
    strategy: str


def channelwise_out_channels(channels: int, kernel: int, stride: int, pads: tuple[int, int]) -> int:
    return (channels + pads[0] + pads[1] - kernel) // stride + 1


def plan_channelwise(channels: int, kernel: int, stride: int, pads: tuple[int, int], spatial,
                     target: Target, dtype: str = "float32") -> ChannelwisePlan | Decline:
    """A channel-wise conv as a 2-D conv sliding over the channel axis (kernel ``kernel`` x 1 on
    a [N, 1, C, H*W] view) or as one 1x1 conv with a banded weight: fewer MACs against fewer,
    more legal nodes; forms the target rejects are costed last."""
    out = channelwise_out_channels(channels, kernel, stride, pads)
    if out < 1:
        return Decline(f"kernel {kernel} is wider than {channels} channels plus padding")
    pixels, known = costed_pixels(spatial)
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
