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
``pipeline.tensor_legality``.

A batch that is a multiple of the symbolic one (a TorchScript export's ``N*4``: windows folded
into the batch; the target runs N = 1) cannot be cut into pieces exact at every N, and pieces of
a tensor over the target's rank (the model's 5-D Relu after a lowered 3-D conv) would be such
tensors too; there the op runs on rank-3 views of its inputs and output
(``plan.legal_views.broadcast_groups``: the batch merged with the axes next to it, which no limit
reads), between Reshapes that keep N in their one -1: elementwise on the same elements, exact at
every batch."""

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
from ..plan.legal_views import broadcast_groups
from ..tensor_limits import (TensorOffence, data_inputs, limits_tensors, merged_batch,
                             target_shape, tensor_offences)
from .transpose_views import view_limits
from .chunk_fusion import CHANNEL_LOCAL_OPS, PER_AXIS_OPS
from .emit import builder
from ..rules import rules_named
from .protocol import (GraphPass, PassResult, RewriteContext, detach, region_record,
                       register_pass)

ELEMENTWISE_OPS = CHANNEL_LOCAL_OPS         # each output element from the same input elements
# Ops that compute each item of the batch axis from that item alone (pools, normalisations over
# the other axes, and pads and block moves that leave the batch axis as it is): cut along the
# batch like elementwise ops (``per_item``), never viewed (their other axes are not layout-blind).
# A pool reading the model's own batch-2 input runs per item on Vela 3's batch 1. (Transposes
# are ``transpose_views``'.)
PER_ITEM_OPS = frozenset({
    "AveragePool", "MaxPool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "BatchNormalization", "InstanceNormalization", "LRN", "LpNormalization", "LogSoftmax",
    "Hardmax", "Pad", "DepthToSpace", "SpaceToDepth",
})
MAX_ROUNDS = 64                             # a chain of pointwise ops moves one op per round


@dataclass
class PiecePlan:
    axis: int                               # of the op's output
    ranges: list[tuple[int, int]]           # [start, stop) of each piece on it
    after_split: bool                       # the pieces are those of the Split reading it
    shares: list[str]                       # per input: "shared" | "constant" | "cut"


def per_item(node: gs.Node, opset: int) -> bool:
    """Does the op compute each item of axis 0 from that item alone (``PER_ITEM_OPS``, with
    the attributes that keep it so)? A BatchNormalization with a momentum before opset 14 is
    not taken: onnx's reference evaluator runs that form on the batch's statistics."""
    out = node.outputs[0] if len(node.outputs) == 1 else None
    if node.op not in PER_ITEM_OPS or out is None or out.shape is None:
        return False
    rank = len(out.shape)
    if node.op in ("LogSoftmax", "Hardmax", "LpNormalization"):
        # over the axis (opset 13 on) or every axis from it (before): per item unless it is 0;
        # the default (1 before opset 13, -1 since) never is
        return int(node.attrs.get("axis", -1)) % rank != 0
    if node.op == "BatchNormalization":
        return not node.attrs.get("training_mode", 0) and \
            (opset >= 14 or "momentum" not in node.attrs)
    if node.op == "Pad":
        return _pads_leave_batch(node, rank)
    return True


def _pads_leave_batch(node: gs.Node, rank: int) -> bool:
    """A Pad that adds nothing on axis 0 (constant pads, and axes, where given)."""
    pads = node.attrs.get("pads")
    if pads is None and len(node.inputs) > 1:
        value = constant_value(node.inputs[1])
        pads = None if value is None else [int(v) for v in np.asarray(value).ravel()]
    if pads is None:
        return False
    axes = list(range(rank))
    if len(node.inputs) > 3 and node.inputs[3].name:
        value = constant_value(node.inputs[3])
        if value is None:
            return False
        axes = [int(a) % rank for a in np.asarray(value).ravel()]
    half = len(pads) // 2
    return all(pads[i] == 0 and pads[i + half] == 0 for i, a in enumerate(axes) if a == 0)


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


@dataclass
class ViewForm:
    groups: list[tuple[int, int]]           # of the output's axes, each one axis of the views
    symbolic: int | None                    # the output axis holding the batch symbol (None:
    #                                         a static batch, views for a rank the pieces lack)


def plan_views(node: gs.Node, offence: TensorOffence, ctx: RewriteContext) -> ViewForm | Decline:
    """The rank-3 view form of an op over a batch the pieces cannot cut (symbolic), or whose
    pieces would be over the target's rank (static)."""
    out = node.outputs[0]
    if offence.violation.rule != "max_tensor_batch" or node.op in PER_AXIS_OPS:
        return Decline("the axis over the limit is not static on the op's output")
    symbolic = [a for a, d in enumerate(out.shape) if not isinstance(d, int)]
    extents = target_shape(out.shape)
    if symbolic not in ([0], []) or extents[0] is None:
        return Decline(f"the output's shape {list(out.shape)} is not static but for a multiple "
                       "of the batch")
    shapes = []
    for tensor in data_inputs(node) + [t for t in node.inputs if isinstance(t, gs.Constant)]:
        shape = tensor.shape
        if shape is None:
            return Decline(f"the shape of {tensor.name} is unknown")
        lead = len(out.shape) - len(shape)
        if any(not isinstance(d, int) and (a + lead != 0 or d != out.shape[0])
               for a, d in enumerate(shape)):
            return Decline(f"{tensor.name}'s shape {list(shape)} is not the output's batch")
        shapes.append(target_shape(shape))
    groups = broadcast_groups(extents, shapes, view_limits(ctx.target))
    if isinstance(groups, Decline):
        return groups
    return missing_ops(ctx.target, ["Reshape"]) or ViewForm(groups, 0 if symbolic else None)


def _pieces_over_rank(node: gs.Node, ctx: RewriteContext) -> bool:
    """Whether the pieces would be tensors of a rank the target lacks (a 5-D map on a rank-4
    engine, the model's own op after a lowered 3-D conv): the rank-3 views then take the op
    whole, with no piece to hold."""
    limit = ctx.target.max_tensor_rank
    return limit is not None and len(node.outputs[0].shape) > limit


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
                elementwise = node.op in ELEMENTWISE_OPS
                if not (elementwise or per_item(node, ctx.opset)) or len(node.outputs) != 1 \
                        or node.domain:
                    continue
                offences = tensor_offences(node, ctx.target)
                if not offences:
                    continue
                if not elementwise and (offences[0].violation.rule != "max_tensor_batch" or
                                        _pieces_over_rank(node, ctx)):
                    continue    # a per-item op is cut along the batch only, into pieces it holds
                plan = plan_pieces(node, offences[0], ctx)
                if elementwise and (isinstance(plan, Decline) and "not static" in plan.reason or
                                    isinstance(plan, PiecePlan) and _pieces_over_rank(node, ctx)):
                    views = plan_views(node, offences[0], ctx)
                    plan = views if isinstance(plan, Decline) or \
                        not isinstance(views, Decline) else plan
                if isinstance(plan, Decline):
                    declined[node.name] = (node, plan.within(self.name))
                    continue
                declined.pop(node.name, None)
                rewrite = self._rewrite if isinstance(plan, PiecePlan) else self._viewed
                outcome.add(rewrite(node, plan, offences[0], ctx, like))
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

    def _viewed(self, node, plan: ViewForm, offence, ctx, like):
        added: list[gs.Node] = []
        b = builder(ctx, added)
        out, base = node.outputs[0], node.name
        rank = len(out.shape)
        inputs = []
        for position, tensor in enumerate(node.inputs):
            if not tensor.name:
                inputs.append(tensor)
                continue
            shape = [1] * (rank - len(tensor.shape)) + list(tensor.shape)
            view = [-1 if not isinstance(shape[a], int) else
                    int(np.prod([shape[k] for k in range(a, z)])) for a, z in plan.groups]
            value = constant_value(tensor)
            if value is not None:
                inputs.append(gs.Constant(ctx.fresh(f"{tensor.name}.view"),
                                          np.ascontiguousarray(value.reshape(view))))
            else:
                viewed = b.reshape(tensor, view, f"{base}/view.{position}",
                                   f"{base}/view.{position}.shape")
                viewed.shape = [merged_batch(shape[a], int(np.prod(target_shape(shape[a:z]))))
                                if v == -1 else v for v, (a, z) in zip(view, plan.groups)]
                inputs.append(viewed)
        extents = target_shape(out.shape)
        shape = [merged_batch(out.shape[0], int(np.prod(extents[a:z]))) if a == plan.symbolic
                 else int(np.prod(extents[a:z])) for a, z in plan.groups]
        result = b.variable(f"{base}/viewed.out", out, shape)
        b.node(node.op, ctx.fresh(f"{base}/viewed"), dict(node.attrs), inputs, [result])
        b.reshape(result, [-1 if a == plan.symbolic else e for a, e in enumerate(extents)],
                  f"{base}/view_out", f"{base}/view_out.shape", out=out)
        how = (f"{node.op} over [{', '.join(map(str, shape))}] views (rank {len(shape)}: no "
               "batch to limit; " + (f"no {len(out.shape)}-D piece to hold)"
                                     if plan.symbolic is None else
                                     f"the batch {out.shape[0]} stays symbolic)"))
        data = [t for t in data_inputs(node) if constant_value(t) is None] or \
            data_inputs(node)[:1]
        record = region_record(self.name, [node], data, [out], ctx, like, how, added, "exact",
                               rules=[offence.violation], macs_before=0, macs_after=0)
        detach([node])
        ctx.graph.nodes.extend(added)
        return record
