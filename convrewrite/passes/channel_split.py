"""Channel split: a conv too wide for the engine becomes sub-convs, summed and concatenated.

Too many input channels → the input is cut into channel chunks (one Split, or one Slice per chunk),
one sub-conv per chunk with the matching weight slice, partial outputs summed with Add (bias on the
first term only). Too many output channels → sub-convs over output chunks, joined by Concat. Grouped
and depthwise convs are cut on group boundaries. The decision is
``plan.channels.plan_channel_split``; this module only emits it as ONNX.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs

from ..conv import ConvSpec, dims_text
from ..legality import Violation
from ..build.onnx_read import constant_value
from ..plan.channels import (ChannelSplitPlan, OutputBlock, SubConv, balanced_chunks,
                             plan_channel_split)
from ..record import Record
from ..target import Target
from ..weight_sum import input_chunk_limit
from .protocol import Decline, Pass, RewriteContext, need
from .emit import replace, sum_terms


class ChannelSplit(Pass):
    name = "channel_split"
    fixes = frozenset({"max_in_channels", "max_out_channels", "max_weight_sum"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        if node.op not in ("Conv", "ConvTranspose"):
            raise Decline(f"{node.op} cannot be split yet (only Conv and ConvTranspose)")
        target = ctx.target
        if any(v.rule == "max_weight_sum" for v in violations):
            target = weight_sum_target(node, spec, target, self.weight(node))
        plan = need(plan_channel_split(spec, target))
        self.require_ops(ctx, split_ops(plan, ctx))
        added = emit_channel_plan(node, spec, plan, self.weight(node), ctx)
        tolerance = "reassociating" if plan.reassociates else "exact"
        record = self.record(node, spec, violations, plan.strategy, added, tolerance)
        replace(node, ctx, added)
        return record


def weight_sum_target(node: gs.Node, spec: ConvSpec, target: Target, weight) -> Target:
    """The target with its input-channel limit lowered until every chunk's quantized weight sum
    fits: each chunk is quantized on its own, so the limit comes from the chunks' own weights."""
    align = target.conv.channel_align
    zero_point = constant_value(weight.zero_point) if weight.quantized and \
        weight.zero_point is not None else None
    most = input_chunk_limit(weight.values, target.conv.max_weight_sum, spec.transposed,
                             spec.groups, zero_point,
                             chunking=lambda total, limit: balanced_chunks(total, limit, align))
    if most is None:
        raise Decline(f"one input channel's {dims_text(spec.kernel_shape)} kernel alone sums to "
                      f"more than {target.conv.max_weight_sum} (a kernel split would be needed)")
    limit = min(most, target.conv.max_in_channels or most)
    return dataclasses.replace(target, conv=dataclasses.replace(target.conv,
                                                                max_in_channels=limit))


def split_ops(plan: ChannelSplitPlan, ctx: RewriteContext) -> set[str]:
    """The ops emitting ``plan`` needs besides Conv."""
    needed = {"Add"} if plan.reassociates else set()
    if len(plan.blocks) > 1:
        needed.add("Concat")
    if len(plan.input_ranges) > 1:
        needed.add("Split" if _use_split(ctx) else "Slice")
    return needed


def _use_split(ctx: RewriteContext) -> bool:
    return ctx.target.rewrite.input_split == "split" and ctx.target.allows_op("Split") \
        or not ctx.target.allows_op("Slice")


def emit_channel_plan(node: gs.Node, spec: ConvSpec, plan: ChannelSplitPlan, weight,
          ctx: RewriteContext) -> list[gs.Node]:
    """The plan's sub-convs, writing the node's output; returns the nodes to add."""
    base = node.name
    x, y = node.inputs[0], node.outputs[0]
    bias = node.inputs[2] if spec.has_bias else None
    bias_values = None if bias is None else constant_value(bias)
    added: list[gs.Node] = []

    chunk_of = _split_input(x, plan, base, ctx, added)

    def out_var(name: str, channels: int) -> gs.Variable:
        shape = None
        if y.shape is not None:
            shape = list(y.shape)
            shape[1] = channels
        return gs.Variable(ctx.fresh(name), dtype=y.dtype, shape=shape)

    block_outputs = []
    single_block = len(plan.blocks) == 1
    for b, block in enumerate(plan.blocks):
        terms = []
        for t, sub in enumerate(block.terms):
            tag = f"o{b}" if len(block.terms) == 1 else f"o{b}.i{t}"
            stem = ctx.fresh(f"{base}/conv.{tag}")
            if sub.block_diagonal:
                rows = weight.take_rows(slice(sub.out_start, sub.out_stop), f"{stem}.rows")
                w, w_nodes = rows.block_diagonal(sub.groups).slice(stem, (slice(None),))
            else:
                w, w_nodes = weight.slice(stem, weight_index(spec, sub))
            added.extend(w_nodes)
            inputs = [chunk_of[(sub.in_start, sub.in_stop)], w]
            if bias is not None and t == 0:
                inputs.append(_bias_slice(bias, bias_values, block, spec.out_channels, stem,
                                          added))
            last = single_block and len(block.terms) == 1
            out = y if last else out_var(f"{stem}.out", block.out_stop - block.out_start)
            attrs = dict(node.attrs, group=1 if sub.block_diagonal else sub.groups)
            added.append(gs.Node(node.op, stem, attrs, inputs, [out]))
            terms.append(out)
        block_outputs.append(sum_terms(ctx, terms, plan.accumulate, f"{base}/sum.o{b}", added,
                                       out=y if single_block else None))
    if not single_block:
        added.append(gs.Node("Concat", ctx.fresh(f"{base}/concat"), {"axis": 1},
                             block_outputs, [y]))
    return added


def _split_input(x: gs.Tensor, plan: ChannelSplitPlan, base: str, ctx: RewriteContext,
                 added: list[gs.Node]) -> dict[tuple[int, int], gs.Tensor]:
    ranges = plan.input_ranges
    if len(ranges) == 1:
        return {ranges[0]: x}
    chunks = {}
    for i, (a, b) in enumerate(ranges):
        shape = None
        if x.shape is not None:
            shape = list(x.shape)
            shape[1] = b - a
        chunks[(a, b)] = gs.Variable(ctx.fresh(f"{base}/in_split.{i}"), dtype=x.dtype, shape=shape)
    if _use_split(ctx):
        sizes = np.array([b - a for a, b in ranges], dtype=np.int64)
        attrs, inputs = {"axis": 1}, [x]
        if ctx.opset >= 13:
            inputs.append(gs.Constant(ctx.fresh(f"{base}/in_split.sizes"), sizes))
        else:
            attrs["split"] = [int(s) for s in sizes]
        added.append(gs.Node("Split", ctx.fresh(f"{base}/in_split"), attrs, inputs,
                             list(chunks.values())))
        return chunks
    for i, (a, b) in enumerate(ranges):
        consts = [gs.Constant(ctx.fresh(f"{base}/in_slice.{i}.{k}"), np.array([v], dtype=np.int64))
                  for k, v in (("starts", a), ("ends", b), ("axes", 1))]
        added.append(gs.Node("Slice", ctx.fresh(f"{base}/in_slice.{i}"), {},
                             [x, *consts], [chunks[(a, b)]]))
    return chunks


def weight_index(spec: ConvSpec, sub: SubConv) -> tuple[slice, slice]:
    """The weight slice a sub-conv uses, in the op's own weight layout."""
    if not spec.transposed:         # [Cout, Cin/G, k...]
        return slice(sub.out_start, sub.out_stop), slice(sub.w_in_start, sub.w_in_stop)
    cout_g = spec.out_per_group    # ConvTranspose: [Cin, Cout/G, k...]
    first = sub.out_start - (sub.out_start // cout_g) * cout_g
    width = sub.out_channels if sub.groups == 1 else cout_g
    return slice(sub.in_start, sub.in_stop), slice(first, first + width)


def _bias_slice(bias: gs.Tensor, values: np.ndarray | None, block: OutputBlock, total: int,
                stem: str, added: list[gs.Node]) -> gs.Tensor:
    """The bias for one output block: the original when the block is everything, else a slice."""
    if block.out_start == 0 and block.out_stop == total:
        return bias
    if values is None:      # a computed bias: slice it in the graph
        out = gs.Variable(f"{stem}.b", dtype=bias.dtype, shape=[block.out_stop - block.out_start])
        consts = [gs.Constant(f"{stem}.b_{k}", np.array([v], dtype=np.int64))
                  for k, v in (("starts", block.out_start), ("ends", block.out_stop), ("axes", 0))]
        added.append(gs.Node("Slice", f"{stem}/bias_slice", {}, [bias, *consts], [out]))
        return out
    return gs.Constant(f"{stem}.b", np.ascontiguousarray(values[block.out_start:block.out_stop]))
