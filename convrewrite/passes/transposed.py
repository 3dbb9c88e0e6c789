"""ConvTranspose on an engine without it: the sub-pixel decomposition, else zero insertion.

Output phase r (outputs q*s + r) of a stride-s transposed conv is an ordinary stride-1 conv of
the *un-upsampled* input with every s-th tap of the flipped kernel. The s**rank phase convs are
interleaved back (DepthToSpace in 2-D, Concat + Reshape in 1-D); no MAC multiplies an inserted
zero. Where that form cannot be built (dilation, 3-D, unequal strides, missing ops) the input is
upsampled with zeros and convolved with the flipped kernel: s**rank times the MACs, any shape.
Sums run in another order: reassociating.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..rules import Violation
from ..build.onnx_read import ConstWeight
from ..plan.transposed import plan_subpixel, plan_zero_insertion
from ..record import Record
from ..decline import Decline, Declined, need
from .protocol import Pass, RewriteContext
from .emit import INT64_MAX, int64s, replace, slice_spatial, variable


def conv_layout(weight: ConstWeight, groups: int) -> ConstWeight:
    """[Cin, Cout/g, k...] (ConvTranspose) -> [Cout, Cin/g, k...] (Conv), taps unflipped."""
    cin, cout_g, *kernel = weight.values.shape
    values = weight.values.reshape(groups, cin // groups, cout_g, *kernel)
    values = np.ascontiguousarray(values.swapaxes(1, 2).reshape(groups * cout_g, cin // groups,
                                                                *kernel))
    axis = weight.axis
    if weight.quantized and np.asarray(weight.scale.values if isinstance(
            weight.scale, gs.Constant) else 0).size > 1:
        if groups != 1:
            raise Declined("per-channel quantized grouped ConvTranspose weights are not lowered")
        axis = {0: 1, 1: 0}.get(axis % weight.values.ndim, axis)
    return ConstWeight(values, weight.scale, weight.zero_point, axis, weight.out_dtype)


def transposed_pads(spec: ConvSpec, output_shape) -> tuple[tuple[int, ...], ConvSpec] | Decline:
    """Explicit begin/end pads of a ConvTranspose, resolving output_shape and auto_pad as the
    ONNX spec does: the total padding is halved, the odd pixel at the end for SAME_UPPER and at
    the start otherwise."""
    rank = spec.rank
    if output_shape is None and spec.auto_pad in ("NOTSET", ""):
        return spec.pads or (0,) * (2 * rank), spec
    if output_shape is None and spec.auto_pad == "VALID":
        return (0,) * (2 * rank), spec
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("output_shape / auto_pad of a ConvTranspose need a static input size")
    sizes = spec.input_shape[2:]
    wanted = list(output_shape)[-rank:] if output_shape is not None else \
        [n * s for n, s in zip(sizes, spec.strides)]
    extra = spec.output_padding or (0,) * rank
    begins, ends = [], []
    for n, s, span, e, want in zip(sizes, spec.strides, spec.dilated_kernel, extra, wanted):
        total = s * (n - 1) + e + span - want
        half = total // 2
        if spec.auto_pad == "SAME_UPPER":
            begins.append(half)
            ends.append(total - half)
        else:
            begins.append(total - half)
            ends.append(half)
    return tuple(begins + ends), dataclasses.replace(spec, pads=tuple(begins + ends),
                                                     auto_pad="NOTSET")


def _taps(indices: tuple[int, ...], stride: int) -> slice:
    """Kernel indices in descending order, every ``stride``-th, as one slice."""
    stop = indices[-1] - 1
    return slice(indices[0], stop if stop >= 0 else None, -stride)


class TransposedToConv(Pass):
    name = "transposed"
    fixes = frozenset({"transposed", "transposed_strides"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        if node.op != "ConvTranspose":
            raise Declined(f"{node.op} is not a transposed conv")
        pads, spec = need(transposed_pads(spec, node.attrs.get("output_shape")))
        weight = conv_layout(self.weight(node), spec.groups)
        form = ctx.target.rewrite.transposed_form
        reasons = []
        for name, build in (("subpixel", _subpixel), ("zero_insertion", _zero_insertion)):
            if form not in ("auto", name):
                continue
            try:
                added, macs, how = build(self, node, spec, pads, weight, ctx)
                break
            except Declined as reason:
                reasons.append(f"{name}: {reason}")
        else:
            raise Declined("; ".join(reasons))
        if reasons:
            how += f" (not {reasons[0]})"
        factor = macs / spec.macs if spec.macs else 1.0
        record = self.record(node, spec, violations, how, added, tolerance="reassociating",
                             macs_factor=factor)
        replace(node, ctx, added)
        return record


def _subpixel(p: Pass, node: gs.Node, spec: ConvSpec, pads, weight: ConstWeight,
              ctx: RewriteContext) -> tuple[list[gs.Node], int, str]:
    plan = need(plan_subpixel(spec, pads))
    if any(not taps for phase in plan.phases for taps in phase.taps):
        raise Declined("a kernel smaller than its stride leaves output phases without taps")
    rank, base, y = spec.rank, node.name, node.outputs[0]
    interleave = ["DepthToSpace"] if rank == 2 else ["Unsqueeze", "Reshape"]
    p.require_ops(ctx, ["Conv", "Concat", "Slice", *interleave])
    added: list[gs.Node] = []
    outputs, macs = [], 0
    for phase in plan.phases:
        tag = ".".join(map(str, phase.offset))
        stem = ctx.fresh(f"{base}/phase{tag}")
        x = node.inputs[0]
        starts = [max(0, -q) for q in phase.pads[:rank]]
        ends = [q if q < 0 else INT64_MAX for q in phase.pads[rank:]]
        if any(starts) or any(e != INT64_MAX for e in ends):
            x = slice_spatial(ctx, x, starts, ends, [1] * rank, f"{stem}/view", added)
        index = (slice(None), slice(None),
                 *(_taps(t, s) for t, s in zip(phase.taps, plan.stride)))
        w, w_nodes = weight.slice(stem, index)
        added.extend(w_nodes)
        kernel = [len(t) for t in phase.taps]
        shape = None
        if y.shape is not None:
            shape = [y.shape[0], spec.out_channels, *plan.phase_length]
        out = variable(ctx, f"{stem}.out", y, shape)
        inputs = [x, w] + ([node.inputs[2]] if spec.has_bias else [])
        added.append(gs.Node("Conv", stem, {"kernel_shape": kernel,
                                            "pads": [max(0, q) for q in phase.pads],
                                            "strides": [1] * rank, "group": spec.groups},
                             inputs, [out]))
        outputs.append(out)
        macs += spec.out_channels * spec.in_per_group * math.prod(kernel) \
            * math.prod(plan.phase_length) * (spec.input_shape[0] or 1)
    whole = [q * s for q, s in zip(plan.phase_length, plan.stride)]
    crop = whole != list(plan.output_length)
    joined = _interleave(ctx, outputs, plan.stride[0], rank, base, y, added,
                         out=None if crop else y)
    if crop:
        slice_spatial(ctx, joined, [0] * rank, list(plan.output_length), [1] * rank,
                      f"{base}/crop", added, out=y)
    return added, macs, f"sub-pixel: {len(plan.phases)} phase convs on the input, interleaved"


def _zero_insertion(p: Pass, node: gs.Node, spec: ConvSpec, pads, weight: ConstWeight,
                    ctx: RewriteContext) -> tuple[list[gs.Node], int, str]:
    plan = need(plan_zero_insertion(spec, pads))
    rank, base, y = spec.rank, node.name, node.outputs[0]
    upsample = any(s > 1 for s in plan.stride)
    crop = any(q < 0 for q in plan.pads)
    p.require_ops(ctx, ["Conv"] + (["Unsqueeze", "Pad", "Reshape"] if upsample else [])
                  + (["Slice"] if crop else []))
    added: list[gs.Node] = []
    x = node.inputs[0]
    if upsample:
        x = _insert_zeros(ctx, x, spec, plan.stride, base, added)
    if crop:
        starts = [max(0, -q) for q in plan.pads[:rank]]
        ends = [q if q < 0 else INT64_MAX for q in plan.pads[rank:]]
        x = slice_spatial(ctx, x, starts, ends, [1] * rank, f"{base}/crop_in", added)
    stem = ctx.fresh(f"{base}/conv")
    flipped = (slice(None), slice(None), *(slice(None, None, -1) for _ in range(rank)))
    w, w_nodes = weight.slice(stem, flipped)
    added.extend(w_nodes)
    inputs = [x, w] + ([node.inputs[2]] if spec.has_bias else [])
    added.append(gs.Node("Conv", stem, {"kernel_shape": list(spec.kernel_shape),
                                        "pads": [max(0, q) for q in plan.pads],
                                        "dilations": list(spec.dilations),
                                        "strides": [1] * rank, "group": spec.groups},
                         inputs, [y]))
    out_positions = math.prod(d for d in (y.shape or [])[2:] if isinstance(d, int)) \
        if y.shape is not None else 0
    macs = spec.out_channels * spec.in_per_group * math.prod(spec.kernel_shape) \
        * out_positions * (spec.input_shape[0] or 1)
    return added, macs, "zero insertion: one conv over the zero-upsampled input"


def _insert_zeros(ctx: RewriteContext, x: gs.Tensor, spec: ConvSpec, stride, base: str,
                  added: list[gs.Node]) -> gs.Tensor:
    """[N, C, L...] -> [N, C, L*s...] with s-1 zeros after every element (Unsqueeze a unit axis
    after each spatial axis, pad it to s, fold it back)."""
    rank = spec.rank
    axes = [3 + 2 * i for i in range(rank)]
    expanded = variable(ctx, f"{base}/upsample_axes.out", x)
    if ctx.opset >= 13:
        added.append(gs.Node("Unsqueeze", ctx.fresh(f"{base}/upsample_axes"), {},
                             [x, int64s(ctx, f"{base}/upsample_axes.axes", axes)], [expanded]))
    else:
        added.append(gs.Node("Unsqueeze", ctx.fresh(f"{base}/upsample_axes"), {"axes": axes},
                             [x], [expanded]))
    total = 2 + 2 * rank
    ends = [0] * total
    for i, s in enumerate(stride):
        ends[axes[i]] = s - 1
    padded = variable(ctx, f"{base}/upsample_zeros.out", x)
    pad_inputs = [expanded, int64s(ctx, f"{base}/upsample_zeros.pads", [0] * total + ends)]
    added.append(gs.Node("Pad", ctx.fresh(f"{base}/upsample_zeros"), {"mode": "constant"},
                         pad_inputs, [padded]))
    sizes = [n * s for n, s in zip(spec.input_shape[2:], stride)]
    up = variable(ctx, f"{base}/upsample.out", x,
                  [x.shape[0], x.shape[1], *sizes] if x.shape is not None else None)
    added.append(gs.Node("Reshape", ctx.fresh(f"{base}/upsample"), {},
                         [padded, int64s(ctx, f"{base}/upsample.shape", [0, 0, *sizes])], [up]))
    return up


def _interleave(ctx: RewriteContext, phases: list[gs.Tensor], stride: int, rank: int,
                base: str, like: gs.Tensor, added: list[gs.Node],
                out: gs.Tensor | None) -> gs.Tensor:
    """Phase outputs (last axis fastest) -> one tensor with the phases interleaved, written to
    ``out`` when given."""
    if len(phases) == 1:                    # stride 1: the single phase is the result
        if out is not None:
            producer = phases[0].inputs[0]
            producer.outputs[0] = out
            return out
        return phases[0]
    if rank == 2:
        stacked = variable(ctx, f"{base}/phases.out", like)
        added.append(gs.Node("Concat", ctx.fresh(f"{base}/phases"), {"axis": 1}, phases,
                             [stacked]))
        out = out if out is not None else variable(ctx, f"{base}/depth_to_space.out", like)
        added.append(gs.Node("DepthToSpace", ctx.fresh(f"{base}/depth_to_space"),
                             {"blocksize": stride, "mode": "DCR"}, [stacked], [out]))
        return out
    expanded = []
    for i, phase in enumerate(phases):
        e = variable(ctx, f"{base}/unsqueeze{i}.out", like)
        if ctx.opset >= 13:
            node = gs.Node("Unsqueeze", ctx.fresh(f"{base}/unsqueeze{i}"), {},
                           [phase, int64s(ctx, f"{base}/unsqueeze{i}.axes", [3])], [e])
        else:
            node = gs.Node("Unsqueeze", ctx.fresh(f"{base}/unsqueeze{i}"), {"axes": [3]},
                           [phase], [e])
        added.append(node)
        expanded.append(e)
    stacked = variable(ctx, f"{base}/phases.out", like)
    added.append(gs.Node("Concat", ctx.fresh(f"{base}/phases"), {"axis": 3}, expanded, [stacked]))
    out = out if out is not None else variable(ctx, f"{base}/interleave.out", like)
    added.append(gs.Node("Reshape", ctx.fresh(f"{base}/interleave"), {},
                         [stacked, int64s(ctx, f"{base}/interleave.shape", [0, 0, -1])], [out]))
    return out
