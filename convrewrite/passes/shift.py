"""Shifts (ShiftNet): our ``Shift`` op, and depthwise convs whose kernels are one-hot, become the
cheapest form the target runs (``plan.shift.plan_shift``): Slice+Pad per channel run and a
Concat (zero FLOPs), a one-hot depthwise conv, or folded into the 1x1 conv that reads the shift
as a k x k conv (the shift becomes which tap each input channel's weight sits on). All exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..decline import Decline
from ..rules import Violation, rules_named
from ..build.onnx_read import const_weight, constant_value, spec_of
from ..ops import DOMAIN
from ..ops.shift import OP_TYPE, one_hot_depthwise_weight, one_hot_offsets, shift_offsets
from ..plan.shift import FoldSite, ShiftPlan, plan_shift
from .protocol import RewriteContext, register_pass
from .emit import INT64_MAX, pad_spatial, slice_axes
from .protocol import PassResult, GraphPass, detach, region_record, single_consumer


def shift_op_offsets(node: gs.Node) -> np.ndarray | Decline:
    channels = node.inputs[0].shape[1] if node.inputs[0].shape is not None else None
    if not isinstance(channels, int):
        return Decline("a Shift needs a static channel count")
    try:
        return shift_offsets(channels, int(node.attrs.get("kernel_size", 3)),
                             int(node.attrs.get("dilation", 1)))
    except ValueError as exc:
        return Decline(str(exc))


def depthwise_shift_offsets(node: gs.Node) -> np.ndarray | None:
    """Offsets of a depthwise Conv that is a shift: ``spec_shift_offsets``, and no bias (or 0)."""
    spec = spec_of(node)
    if isinstance(spec, Decline):
        return None
    if len(node.inputs) > 2 and node.inputs[2].name:
        bias = constant_value(node.inputs[2])
        if bias is None or np.any(bias):
            return None
    weight = const_weight(node.inputs[1])
    if isinstance(weight, Decline) or weight.quantized:
        return None
    return spec_shift_offsets(spec, weight.values)


def spec_shift_offsets(spec: ConvSpec, weight: np.ndarray) -> np.ndarray | None:
    """Offsets of a conv (any IR: ONNX here, Relax in ``tvm/shift_fusion.py``) that is a shift:
    depthwise, one-hot kernels of value 1 (``weight``: its constant values), stride 1, explicit
    pads that keep the map's size."""
    if spec.transposed or spec.group_form != "depthwise" or spec.depth_multiplier != 1 \
            or spec.auto_pad not in ("NOTSET", "") or any(s != 1 for s in spec.strides):
        return None
    rank = spec.rank
    if any(spec.pads[i] + spec.pads[i + rank] != (k - 1) * d
           for i, (k, d) in enumerate(zip(spec.kernel_shape, spec.dilations))):
        return None
    return one_hot_offsets(weight, spec.pads[:rank], spec.dilations)


def _ints(tensor: gs.Tensor) -> list[int] | None:
    value = constant_value(tensor)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def pad_slice_shift(concat: gs.Node):
    """(x, [Pad, Slices..., Concat], offsets) when ``concat`` joins, along channels and in order,
    same-size windows of one zero-Pad of x: a shift as PyTorch ShiftNet code writes it."""
    if int(concat.attrs.get("axis", 0)) != 1 or not concat.inputs:
        return None
    slices = [t.inputs[0] if len(t.inputs) == 1 else None for t in concat.inputs]
    if any(s is None or s.op != "Slice" or len(s.outputs[0].outputs) != 1 for s in slices):
        return None
    padded = slices[0].inputs[0]
    pad = padded.inputs[0] if len(padded.inputs) == 1 else None
    if pad is None or pad.op != "Pad" or any(s.inputs[0] is not padded for s in slices):
        return None
    if {id(r) for r in padded.outputs} != {id(s) for s in slices}:
        return None             # the padded map feeds more than this shift: it must stay
    x = pad.inputs[0]
    if x.shape is None or any(not isinstance(d, int) for d in x.shape) or len(x.shape) < 3:
        return None
    if pad.attrs.get("mode", "constant") not in ("constant", b"constant"):
        return None
    pads = _ints(pad.inputs[1]) if len(pad.inputs) > 1 else list(pad.attrs.get("pads", []))
    if len(pad.inputs) > 2 and pad.inputs[2].name:
        fill = constant_value(pad.inputs[2])
        if fill is None or np.any(fill):
            return None
    rank = len(x.shape)
    if pads is None or len(pads) != 2 * rank or len(pad.inputs) > 3 or any(pads[:2]) \
            or any(pads[rank:rank + 2]) or min(pads) < 0:
        return None
    offsets, channel = [], 0
    for s in slices:
        window = _slice_window(s, [d + pads[i] + pads[i + rank] for i, d in enumerate(x.shape)])
        if window is None or window[1][0] != channel:
            return None
        (_, _), (c0, c1), *spatial = window
        if any(b - a != x.shape[2 + i] for i, (a, b) in enumerate(spatial)):
            return None
        offsets += [[a - pads[2 + i] for i, (a, _) in enumerate(spatial)]] * (c1 - c0)
        channel = c1
    if channel != x.shape[1] or len({id(s) for s in slices}) != len(slices):
        return None
    return x, [pad, *slices, concat], np.asarray(offsets, dtype=np.int64)


def _slice_window(node: gs.Node, shape: list[int]):
    """Per axis (start, stop) of a unit-step Slice of a tensor of ``shape``, or None."""
    starts, ends = _ints(node.inputs[1]), _ints(node.inputs[2])
    axes = _ints(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else \
        list(range(len(starts or [])))
    steps = _ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4].name else \
        [1] * len(axes or [])
    if starts is None or ends is None or axes is None or steps is None or any(s != 1 for s in steps):
        return None
    window = [(0, d) for d in shape]
    for a, start, end in zip(axes, starts, ends):
        a %= len(shape)
        window[a] = range(shape[a])[slice(start, end)].start, range(shape[a])[slice(start, end)].stop
    return window


def is_dense_pointwise(spec: ConvSpec) -> bool:
    """A dense 1x1 conv without padding: what a shift can be folded (or fused) into."""
    return spec.groups == 1 and not spec.transposed and all(k == 1 for k in spec.kernel_shape) \
        and not any(spec.pads) and spec.auto_pad in ("NOTSET", "", "VALID")


def fold_target(shifted: gs.Tensor, graph: gs.Graph) -> gs.Node | None:
    """The dense 1x1 conv (no padding or dilation, constant float weight) reading the shift
    alone."""
    consumer = single_consumer(shifted, graph)
    if consumer is None or consumer.op != "Conv" or consumer.inputs[0] is not shifted:
        return None
    spec = spec_of(consumer)
    if isinstance(spec, Decline) or not is_dense_pointwise(spec):
        return None
    weight = const_weight(consumer.inputs[1])
    return None if isinstance(weight, Decline) or weight.quantized else consumer


@register_pass
class ShiftLowering(GraphPass):
    name = "shift"
    fixes = rules_named("ops")

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        for node in list(ctx.graph.nodes):
            if not node.outputs or node.name in ctx.emitted:
                continue
            nodes, x = [node], node.inputs[0] if node.inputs else None
            if node.op == OP_TYPE and node.domain == DOMAIN:
                offsets, current = shift_op_offsets(node), None
                if isinstance(offsets, Decline):
                    outcome.decline(node, offsets)
                    continue
            elif node.op == "Conv":
                offsets, current = depthwise_shift_offsets(node), "depthwise"
                if offsets is None:
                    continue
            elif node.op == "Concat":
                found = pad_slice_shift(node)
                if found is None:
                    continue
                x, nodes, offsets = found
                current = "slice_pad"
            else:
                continue
            spatial = x.shape[2:] if x.shape is not None else None
            consumer = fold_target(node.outputs[0], ctx.graph)
            site = None if consumer is None else FoldSite(
                spec_of(consumer).out_channels, _pixels_of(consumer.outputs[0]))
            plan = plan_shift(offsets, spatial, ctx.target, site, current)
            if isinstance(plan, Decline):
                if current is None:
                    outcome.decline(node, f"shift: {plan}")
                else:
                    form = {"depthwise": "a one-hot depthwise conv",
                            "slice_pad": "Pad and Slices"}[current]
                    outcome.recognised.append(
                        f"shift: {node.name!r}, {form} over {len(offsets)} channels ({plan})")
                continue
            outcome.add(self._lower(nodes, x, offsets, plan, consumer, ctx, like))
        return outcome

    def _lower(self, nodes: list[gs.Node], x: gs.Tensor, offsets: np.ndarray, plan: ShiftPlan,
               consumer: gs.Node | None, ctx: RewriteContext, like: onnx.ModelProto):
        node = nodes[-1]                        # writes the shifted tensor
        region = nodes + ([consumer] if plan.form == "fold" else [])
        out = region[-1].outputs[0]
        if node.outputs[0].shape is None:       # shape inference does not know our op
            node.outputs[0].shape, node.outputs[0].dtype = x.shape, x.dtype
        rules = []
        if node.domain == DOMAIN:
            rules.append(Violation("ops", f"{DOMAIN}.{OP_TYPE}", "standard ONNX",
                                   "our domain's Shift op runs on no engine"))
        macs_before = spec_of(node).macs if node.op == "Conv" else 0
        pixels = _pixels_of(out) or _pixels_of(x) or 0     # our op hides shapes after it
        added: list[gs.Node] = []
        if plan.form == "slice_pad":
            emit_slice_pad(ctx, x, plan, node.name, added, out)
            macs_after = 0
        elif plan.form == "depthwise":
            emit_one_hot_depthwise(ctx, x, offsets, plan, node.name, added, out)
            macs_after = len(offsets) * int(np.prod(plan.kernel)) * pixels
        else:
            weight = const_weight(consumer.inputs[1]).values
            macs_before = (macs_before or 0) + weight.shape[0] * weight.shape[1] * pixels
            emit_fold(ctx, x, offsets, plan, consumer, added, out)
            macs_after = weight.shape[0] * weight.shape[1] * int(np.prod(plan.kernel)) * pixels
        record = region_record(self.name, region, x, [out], ctx, like,
                               plan.strategy, added, rules=rules, macs_before=macs_before,
                               macs_after=macs_after)
        detach(region)
        ctx.graph.nodes.extend(added)
        ctx.emitted.update(n.name for n in added)
        return record


def _pixels_of(tensor: gs.Tensor) -> int | None:
    shape = tensor.shape
    if shape is None or any(not isinstance(d, int) for d in shape[2:]):
        return None
    return int(np.prod(shape[2:]))


def emit_slice_pad(ctx: RewriteContext, x: gs.Tensor, plan: ShiftPlan, stem: str,
                   added: list[gs.Node], out: gs.Tensor) -> None:
    """One run: Slice away what leaves the map, Pad zeros where it enters. Several runs: Pad the
    map once by the largest offset, then one Slice per run (its channels, its window) and a
    Concat: runs + 2 nodes, since at small maps onnxruntime's per-node cost dominates."""
    if len(plan.runs) == 1:
        (run,) = plan.runs
        if not any(run.offset):
            added.append(gs.Node("Identity", ctx.fresh(f"{stem}/identity"), {}, [x], [out]))
            return
        axes = [2 + a for a, o in enumerate(run.offset) if o]
        moved = [o for o in run.offset if o]
        part = slice_axes(ctx, x, axes, [max(0, o) for o in moved],
                          [INT64_MAX if o > 0 else o for o in moved], [1] * len(axes),
                          f"{stem}/shift", added)
        pad_spatial(ctx, part, [max(0, -o) for o in run.offset], [max(0, o) for o in run.offset],
                    f"{stem}/shift/pad", added, out=out)
        return
    reach = [max(abs(r.offset[a]) for r in plan.runs) for a in range(len(plan.runs[0].offset))]
    padded = pad_spatial(ctx, x, reach, reach, f"{stem}/shift/pad", added)
    parts = []
    for i, run in enumerate(plan.runs):
        ends = [r - o if r - o > 0 else INT64_MAX for r, o in zip(reach, run.offset)]
        parts.append(slice_axes(ctx, padded, list(range(1, 2 + len(reach))),
                                [run.first] + [r + o for r, o in zip(reach, run.offset)],
                                [run.stop] + [-e if e != INT64_MAX else e for e in ends],
                                [1] * (1 + len(reach)), f"{stem}/shift{i}", added))
    added.append(gs.Node("Concat", ctx.fresh(f"{stem}/concat"), {"axis": 1}, parts, [out]))


def _conv_attrs(plan: ShiftPlan, **extra) -> dict:
    pads = [d * (k // 2) for k, d in zip(plan.kernel, plan.dilation)]
    return {"kernel_shape": list(plan.kernel), "dilations": list(plan.dilation),
            "pads": pads + pads, **extra}


def emit_one_hot_depthwise(ctx: RewriteContext, x: gs.Tensor, offsets: np.ndarray,
                           plan: ShiftPlan, stem: str, added: list[gs.Node],
                           out: gs.Tensor) -> None:
    dtype = np.dtype(x.dtype) if x.dtype is not None else np.float32
    weight = gs.Constant(ctx.fresh(f"{stem}/one_hot.w"),
                         one_hot_depthwise_weight(offsets, plan.kernel, plan.dilation, dtype))
    attrs = _conv_attrs(plan, group=len(offsets), strides=[1] * len(plan.kernel))
    added.append(gs.Node("Conv", ctx.fresh(f"{stem}/one_hot"), attrs, [x, weight], [out]))


def emit_fold(ctx: RewriteContext, x: gs.Tensor, offsets: np.ndarray, plan: ShiftPlan,
              consumer: gs.Node, added: list[gs.Node], out: gs.Tensor) -> None:
    """conv1x1(shift(x)) = a k x k conv of x whose weight puts input channel c's column on the
    tap of c's offset: the zeros the shift lets in are the conv's padding."""
    values = const_weight(consumer.inputs[1]).values
    folded = np.zeros((*values.shape[:2], *plan.kernel), dtype=values.dtype)
    taps = offsets // np.asarray(plan.dilation) + np.asarray(plan.kernel) // 2
    channels = np.arange(values.shape[1])
    folded[(slice(None), channels, *taps.T)] = values.reshape(values.shape[:2])
    spec = spec_of(consumer)
    weight = gs.Constant(ctx.fresh(f"{consumer.name}/shift_folded.w"), folded)
    inputs = [x, weight] + [t for t in consumer.inputs[2:3] if t.name]
    attrs = _conv_attrs(plan, strides=list(spec.strides))
    name = ctx.fresh(f"{consumer.name}/shift_folded")
    added.append(gs.Node("Conv", name, attrs, inputs, [out]))
