"""Our ``ChannelwiseConv`` op in standard ONNX, by ``plan.channelwise.plan_channelwise``: a k x 1
Conv sliding over the channel axis of a [N, 1, C, H*W] view (k MACs per output), or a 1x1 conv
with the banded [Co, C] weight (C MACs per output, one node, any engine's favourite shape)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..decline import Decline
from ..rules import Violation, rules_named
from ..build.onnx_read import constant_value, dtype_name
from ..ops import DOMAIN
from ..ops.channelwise import OP_TYPE, banded_weight, channelwise_attrs
from ..plan.channelwise import plan_channelwise
from .protocol import RewriteContext, register_pass
from .emit import int64s
from .protocol import PassResult, GraphPass, detach, lower_each, region_record


@register_pass
class ChannelwiseLowering(GraphPass):
    name = "channelwise"
    fixes = rules_named("ops")

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        ours = [n for n in ctx.graph.nodes if n.op == OP_TYPE and n.domain == DOMAIN and n.outputs]
        return lower_each(self.name, ours, lambda node: self._lower(node, ctx, like), ctx.graph)

    def _lower(self, node: gs.Node, ctx: RewriteContext, like: onnx.ModelProto):
        x = node.inputs[0]
        try:
            stride, pads = channelwise_attrs(node.attrs)
        except ValueError as exc:
            return Decline(str(exc))
        kernel = constant_value(node.inputs[1])
        if kernel is None or kernel.ndim != 1:
            return Decline("the kernel W must be a constant 1-D tensor")
        if x.shape is None or not isinstance(x.shape[1], int):
            return Decline("the input's channel count is not static")
        spatial = list(x.shape[2:])
        bias = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name \
            else None
        if len(node.inputs) > 2 and node.inputs[2].name and bias is None:
            return Decline("the bias B must be a constant")
        plan = plan_channelwise(x.shape[1], len(kernel), stride, pads, spatial, ctx.target,
                                dtype_name(x))
        if isinstance(plan, Decline):
            return plan
        if plan.form == "conv" and any(not isinstance(d, int) for d in spatial):
            return Decline("the channel-axis conv needs static spatial sizes")
        out = node.outputs[0]
        pixels = int(np.prod(spatial)) if all(isinstance(d, int) for d in spatial) else None
        channels = x.shape[1]
        added: list[gs.Node] = []
        dtype = np.dtype(x.dtype) if x.dtype is not None else np.float32
        if plan.form == "conv":
            emit_channel_axis_conv(ctx, node, kernel.astype(dtype), bias, stride, pads,
                                   plan.out_channels, added)
            macs = None if pixels is None else plan.out_channels * len(kernel) * pixels
        else:
            rank = len(spatial)
            weight = banded_weight(channels, kernel.astype(dtype), stride, pads)
            inputs = [x, gs.Constant(ctx.fresh(f"{node.name}/banded.w"),
                                     weight.reshape(*weight.shape, *[1] * rank))]
            if bias is not None:
                inputs.append(gs.Constant(ctx.fresh(f"{node.name}/banded.b"),
                                          np.full(plan.out_channels, bias.reshape(-1)[0], dtype)))
            added.append(gs.Node("Conv", ctx.fresh(f"{node.name}/banded"),
                                 {"kernel_shape": [1] * rank}, inputs, [out]))
            macs = None if pixels is None else plan.out_channels * channels * pixels
        rule = Violation("ops", f"{DOMAIN}.{OP_TYPE}", "standard ONNX",
                         "our domain's ChannelwiseConv runs on no engine")
        record = region_record(self.name, [node], x, [out], ctx, like, plan.strategy, added,
                               tolerance="reassociating", rules=[rule],
                               macs_before=None if pixels is None
                               else plan.out_channels * len(kernel) * pixels, macs_after=macs)
        detach([node])
        ctx.graph.nodes.extend(added)
        return record


def emit_channel_axis_conv(ctx: RewriteContext, node: gs.Node, kernel: np.ndarray, bias,
                           stride: int, pads, out_channels: int, added: list[gs.Node]) -> None:
    """[N, C, *sp] -> [N, 1, C, P] -> Conv (k x 1, stride s x 1) -> [N, 1, Co, P] -> [N, Co, *sp]."""
    x, out = node.inputs[0], node.outputs[0]
    stem = node.name
    flat = gs.Variable(ctx.fresh(f"{stem}/as_rows"), dtype=x.dtype)
    added.append(gs.Node("Reshape", ctx.fresh(f"{stem}/to_rows"), {},
                         [x, int64s(ctx, f"{stem}/rows_shape", [0, 1, x.shape[1], -1])], [flat]))
    weight = gs.Constant(ctx.fresh(f"{stem}/slide.w"), kernel.reshape(1, 1, -1, 1))
    inputs = [flat, weight]
    if bias is not None:
        inputs.append(gs.Constant(ctx.fresh(f"{stem}/slide.b"),
                                  bias.reshape(-1)[:1].astype(kernel.dtype)))
    slid = gs.Variable(ctx.fresh(f"{stem}/slid"), dtype=x.dtype)
    added.append(gs.Node("Conv", ctx.fresh(f"{stem}/slide"),
                         {"kernel_shape": [len(kernel), 1], "strides": [stride, 1],
                          "pads": [pads[0], 0, pads[1], 0]}, inputs, [slid]))
    added.append(gs.Node("Reshape", ctx.fresh(f"{stem}/to_maps"), {},
                         [slid, int64s(ctx, f"{stem}/maps_shape",
                                       [0, out_channels, *x.shape[2:]])], [out]))
