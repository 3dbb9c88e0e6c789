"""An integer conv's kernel folded into its input channels: each tap's view of the zero-point
padded input (a strided Slice) stacked on the channel axis by one Concat, read by one 1x1 conv of
the same op whose weight holds the taps side by side. The int32 sum over taps and channels is
the same sum in another order (exact in integers) and the requantization is the conv's own, so
a QLinearConv stays bit-exact where its kernel split would need ConvInteger, Cast and
QuantizeLinear for int32 partial sums (k210's and generic's ops lists lack them)."""

from __future__ import annotations

import itertools
from math import prod

import numpy as np
import onnx_graphsurgeon as gs

from ..build.onnx_read import conv_inputs
from ..conv import ConvSpec
from ..decline import Declined
from .emit import builder, conv_copy, pad_spatial, pad_value, slice_spatial
from .protocol import RewriteContext


def fold_taps(node: gs.Node, spec: ConvSpec, pads: list[int], weight, ctx: RewriteContext,
              added: list[gs.Node]) -> str:
    """Write ``node``'s output as one 1x1 conv over its taps stacked in channels (into
    ``added``); the rewrite's words. Declined where the stack is over the channel limit or the
    conv is grouped (a grouped stack would interleave groups and taps)."""
    if not spec.constant_weight:
        raise Declined(f"a {spec.op_type} weight computed at run time is not folded into "
                       "channels")
    taps = prod(spec.kernel_shape)
    stacked = spec.in_channels * taps
    limit = ctx.target.conv.max_in_channels
    if spec.groups != 1:
        raise Declined(f"a grouped {spec.op_type} (groups {spec.groups}) is not folded into "
                       "channels")
    if limit is not None and stacked > limit:
        raise Declined(f"its {taps} taps stacked in channels make {stacked} input channels, "
                       f"over the target's {limit}")
    rank, base = spec.rank, node.name
    x = pad_spatial(ctx, node.inputs[0], list(pads[:rank]), list(pads[rank:]), f"{base}/pad",
                    added, value=pad_value(node))
    out_shape = spec.output_shape[2:] if spec.output_shape else None
    if out_shape is None or any(not isinstance(d, int) for d in out_shape):
        raise Declined("the output's spatial size is not static: the taps' views need it")
    views = []
    for tap in itertools.product(*(range(k) for k in spec.kernel_shape)):
        starts = [t * d for t, d in zip(tap, spec.dilations)]
        ends = [s + (o - 1) * st + 1 for s, o, st in zip(starts, out_shape, spec.strides)]
        views.append(slice_spatial(ctx, x, starts, ends, list(spec.strides),
                                   ctx.fresh(f"{base}/tap"), added))
    stack = builder(ctx, added).concat(views, 1, ctx.fresh(f"{base}/taps"))
    # W[o, c, k...] -> W'[o, tap * C + c]: the stack's channel order (tap-major)
    values = np.moveaxis(weight.values, 1, -1).reshape(spec.out_channels, stacked)
    w = gs.Constant(ctx.fresh(f"{base}/taps.w"), np.ascontiguousarray(
        values.reshape(spec.out_channels, stacked, *[1] * rank)))
    conv_copy(ctx, node, ctx.fresh(f"{base}/taps_conv"), conv_inputs(node, stack, w), added,
              out=node.outputs[0], kernel_shape=[1] * rank, pads=[0] * (2 * rank),
              strides=[1] * rank, dilations=[1] * rank)
    return (f"{taps} taps stacked in channels ({spec.in_channels} -> {stacked}, one Concat of "
            "strided Slices of the zero-point padded input), one 1x1 conv: the same int32 sum")
