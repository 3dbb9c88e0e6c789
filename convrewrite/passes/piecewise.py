"""Elementwise ops over tensors the target cannot hold (``max_tensor_batch``: a batch of 2 where
every op runs batch 1; ``max_tensor_dim``: an axis longer than any tensor may be) run per piece
of that axis: its inputs cut (Split, else Slices), one op per piece, the pieces joined by Concat.
Where a conv lowering already cuts the op's output (the batch split's Split), the pieces are that
Split's, so the tidying chunk fusion removes the Concat -> Split pair between them and one
Split ... Concat region encloses the conv and the pointwise ops before it (and, a chain of them,
each in turn). The Concat keeps the op's output tensor, so every other record's boundary stays
where it was verified. An elementwise op computes each element from the same element of its
inputs (side inputs that broadcast over the axis are shared, constants along it are cut): exact.
What stays over a limit (the model's own input or output, a cut of it) is named by
``pipeline.tensor_legality``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx_read import constant_value
from ..decline import Decline
from ..gs_order import cleanup_and_toposort
from ..lowerings.channel_split import use_split
from ..plan.batch import even_chunks
from ..plan.limits import missing_ops
from ..tensor_limits import TensorOffence, data_inputs, limits_tensors, tensor_offences
from .chunk_fusion import CHANNEL_LOCAL_OPS, PER_AXIS_OPS
from .emit import builder
from ..rules import rules_named
from .protocol import (GraphPass, PassResult, RewriteContext, detach, region_record,
                       register_pass)

ELEMENTWISE_OPS = CHANNEL_LOCAL_OPS         # each output element from the same input elements
MAX_ROUNDS = 64                             # a chain of pointwise ops moves one op per round


@dataclass
class PiecePlan:
    axis: int                               # of the op's output
    ranges: list[tuple[int, int]]           # [start, stop) of each piece on it
    after_split: bool                       # the pieces are those of the Split reading it
    shares: list[str]                       # per input: "shared" | "constant" | "cut"


def _split_ranges(split: gs.Node, axis: int, rank: int) -> list[tuple[int, int]] | None:
    if split.attrs.get("axis", 0) % rank != axis:
        return None
    sizes = split.attrs.get("split")
    if sizes is None and len(split.inputs) > 1 and split.inputs[1].name:
        value = constant_value(split.inputs[1])
        sizes = None if value is None else [int(v) for v in value]
    if sizes is None or len(sizes) != len(split.outputs):
        return None
    bounds = np.cumsum([0, *sizes])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _split_after(out: gs.Tensor, graph: gs.Graph, axis: int, limit: int):
    """The ranges of the one Split reading ``out`` when it cuts ``axis`` into pieces within
    ``limit`` (a batch split's), else None."""
    readers = list(out.outputs)
    if len(readers) != 1 or readers[0].op != "Split" or any(out is t for t in graph.outputs):
        return None
    ranges = _split_ranges(readers[0], axis, len(out.shape))
    if ranges and ranges[-1][1] == out.shape[axis] and all(b - a <= limit for a, b in ranges):
        return ranges
    return None


def _shares(node: gs.Node, axis: int, extent: int) -> list[str] | Decline:
    rank = len(node.outputs[0].shape)
    shares = []
    for position, tensor in enumerate(node.inputs):
        if not tensor.name:
            shares.append("shared")
            continue
        if node.op in PER_AXIS_OPS and position > 0:
            value = constant_value(tensor)
            if value is None:
                return Decline(f"{node.op}'s {tensor.name} is computed in the graph")
            if value.size == 1 or node.attrs.get("axis", 1) % rank != axis:
                shares.append("shared")
                continue
            return Decline(f"{node.op} quantizes per element of the cut axis")
        shape = tensor.shape
        if shape is None:
            return Decline(f"the shape of {tensor.name} is unknown")
        in_axis = axis - (rank - len(shape))
        if in_axis < 0 or shape[in_axis] == 1:
            shares.append("shared")
        elif shape[in_axis] != extent:
            return Decline(f"{tensor.name} has {shape[in_axis]} on the cut axis, the output "
                           f"{extent}")
        else:
            shares.append("constant" if constant_value(tensor) is not None else "cut")
    return shares


def plan_pieces(node: gs.Node, offence: TensorOffence, ctx: RewriteContext) -> PiecePlan | Decline:
    out = node.outputs[0]
    if out.shape is None:
        return Decline("the op's output shape is unknown")
    rank = len(out.shape)
    axis = offence.axis + rank - len(offence.tensor.shape)
    extent = out.shape[axis] if 0 <= axis < rank else None
    if not isinstance(extent, int):
        return Decline("the axis over the limit is not static on the op's output")
    limit = offence.violation.limit
    shares = _shares(node, axis, extent)
    if isinstance(shares, Decline):
        return shares
    ranges = _split_after(out, ctx.graph, axis, limit)
    missing = missing_ops(ctx.target, ["Concat"] + ([] if "cut" not in shares else
                                                    ["Split" if use_split(ctx.target) else
                                                     "Slice"]))
    if missing:
        return missing
    return PiecePlan(axis, ranges or list(even_chunks(extent, limit)), ranges is not None,
                     shares)


@register_pass
class PiecewiseOps(GraphPass):
    name = "piecewise"
    fixes = rules_named("max_tensor_dim", "max_tensor_batch")

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        if not limits_tensors(ctx.target):
            return outcome
        declined: dict[str, tuple[gs.Node, Decline]] = {}
        for _ in range(MAX_ROUNDS):
            changed = False
            for node in list(ctx.graph.nodes):
                if node.op not in ELEMENTWISE_OPS or len(node.outputs) != 1 or node.domain:
                    continue
                offences = tensor_offences(node, ctx.target)
                if not offences:
                    continue
                plan = plan_pieces(node, offences[0], ctx)
                if isinstance(plan, Decline):
                    declined[node.name] = (node, plan.within(self.name))
                    continue
                declined.pop(node.name, None)
                outcome.add(self._rewrite(node, plan, offences[0], ctx, like))
                changed = True
            if not changed:
                break
        for node, decline in declined.values():
            outcome.decline(node, decline)
        if outcome.modified:
            cleanup_and_toposort(ctx.graph)
        return outcome

    def _rewrite(self, node, plan: PiecePlan, offence, ctx, like):
        added: list[gs.Node] = []
        b = builder(ctx, added)
        out, base = node.outputs[0], node.name
        rank = len(out.shape)
        pieces_of = []
        for position, (tensor, share) in enumerate(zip(node.inputs, plan.shares)):
            in_axis = plan.axis - (rank - len(tensor.shape or ()))
            if share == "shared":
                pieces_of.append([tensor] * len(plan.ranges))
            elif share == "constant":
                value = constant_value(tensor)
                index = [slice(None)] * value.ndim
                parts = []
                for i, (a, z) in enumerate(plan.ranges):
                    index[in_axis] = slice(a, z)
                    parts.append(gs.Constant(ctx.fresh(f"{tensor.name}.piece{i}"),
                                             np.ascontiguousarray(value[tuple(index)])))
                pieces_of.append(parts)
            else:
                pieces_of.append(b.split_axis(tensor, in_axis, plan.ranges,
                                              f"{base}/piece_split.{position}",
                                              use_split(ctx.target),
                                              f"{base}/piece_slice.{position}"))
        outputs = []
        for i, (a, z) in enumerate(plan.ranges):
            shape = list(out.shape)
            shape[plan.axis] = z - a
            outputs.append(b.variable(f"{base}/piece{i}.out", out, shape))
            b.node(node.op, ctx.fresh(f"{base}/piece{i}"), dict(node.attrs),
                   [parts[i] for parts in pieces_of], [outputs[-1]])
        data = [t for t, s in zip(node.inputs, plan.shares) if s == "cut"] or \
            data_inputs(node)[:1]
        b.concat(outputs, plan.axis, f"{base}/piece_concat", out=out)
        sizes = sorted({z - a for a, z in plan.ranges})
        how = (f"{node.op} in {len(plan.ranges)} pieces of {' or '.join(map(str, sizes))} on "
               f"axis {plan.axis} (target: {offence.violation.limit}), joined by Concat"
               + (" (the pieces of the Split after it, so chunk fusion can join the two)"
                  if plan.after_split else ""))
        record = region_record(self.name, [node], data, [out], ctx, like, how, added, "exact",
                               rules=[offence.violation], macs_before=0, macs_after=0)
        detach([node])
        ctx.graph.nodes.extend(added)
        return record
