"""Elementwise arithmetic over tensors above the target's rank, between movement and a
reduction: timm's ResNeSt split attention views [N, r*C, H, W] as [N, r, C, H, W] and its
attention as [N, r, C, 1, 1], multiplies them and sums over r. Every tensor of such an island
is viewed with adjacent axes merged wherever no operand broadcasts differently and no reduction
reduces differently ([N, r, C, H*W] and [N, r, C, 1] here): each operand made in that view by the
rank-reduction pass's movement steps from the tensor it was moved from, the arithmetic and the
reductions run there, and the reductions' results viewed back."""

from __future__ import annotations

from math import prod

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx_read import constant_value
from ..decline import Decline
from ..rules import Violation, rules_named
from .emit import variable
from .probe import run_region, why_shape_unknown
from .protocol import GraphPass, PassResult, RewriteContext, detach, region_record, register_pass
from .rank_reduction import (ORDER_FREE, REDUCE_OPS, Piece, emit_piece, plan_piece,
                             probe_ramps, reduced_axes)
from .shuffle import MOVEMENT_OPS, find_region, offence
from .view_sinking import BINARY_OPS, UNARY_OPS


def _rank(tensor: gs.Tensor) -> int | None:
    return len(tensor.shape) if tensor.shape is not None else None


@register_pass
class BroadcastViews(GraphPass):
    name = "broadcast_views"
    fixes = rules_named("max_tensor_rank")

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        limit = ctx.target.max_tensor_rank
        if limit is None:
            return outcome
        for node in list(ctx.graph.nodes):
            if not node.outputs or node.op not in BINARY_OPS | UNARY_OPS or \
                    (_rank(node.outputs[0]) or 0) <= limit:
                continue
            island = find_island(node, ctx.graph)
            feeders = _offending_feeders(node, ctx) if isinstance(island, Decline) else \
                _offending_feeders(island, ctx)
            if not feeders:          # no movement the target rejects (a 3-D net's activations)
                continue
            plan = island if isinstance(island, Decline) else plan_island(*island, ctx, like)
            if isinstance(plan, Decline):
                for feeder in feeders:      # the movement stays; the report names it, and why
                    outcome.decline(feeder, plan.within(self.name))
                continue
            rank = _rank(node.outputs[0])
            outcome.add(self._rewrite(*plan, ctx, like, Violation(
                "max_tensor_rank", rank, limit, f"{node.op} makes a {rank}-D tensor; the "
                f"target handles at most {limit}-D")))
        return outcome

    def _rewrite(self, removed, inputs, exits, emit, ctx, like, violation):
        added: list[gs.Node] = []
        exact = all(r.op in ORDER_FREE for r in exits)
        record = region_record(self.name, removed, inputs, [r.outputs[0] for r in exits],
                               ctx, like, f"{len(nodes_of(removed))} arithmetic node(s) and "
                               f"{len(exits)} reduction(s) over views of at most "
                               f"{ctx.target.max_tensor_rank} axes", added,
                               "exact" if exact else "reassociating", rules=[violation],
                               macs_before=0, macs_after=0)
        emit(added)     # after the record: an exit's output can feed the shape arithmetic of
        record.nodes_after = len(added)     # an operand (ResNeSt's attention), and the region
        detach(removed)                     # alone must not see the replacement writing it
        ctx.graph.nodes.extend(added)
        return record


def _offending_feeders(island, ctx: RewriteContext) -> list[gs.Node]:
    """The movement nodes making the island's operands (or the tensors a Concat stacks into
    one) that the target rejects (for a node whose island could not be found: those making its
    own inputs)."""
    nodes = island[0] if isinstance(island, tuple) else [island]
    found, stack = [], [t for node in nodes for t in node.inputs]
    while stack:
        tensor = stack.pop()
        producer = tensor.inputs[0] if tensor.inputs else None
        if producer is None or producer in found or producer in nodes:
            continue
        if producer.op == "Concat":                     # a stack of moved tensors
            stack += producer.inputs
        elif offence(producer, ctx.target, ctx.graph) is not None:
            found.append(producer)
    return found


def nodes_of(removed: list[gs.Node]) -> list[gs.Node]:
    return [n for n in removed if n.op in BINARY_OPS | UNARY_OPS]


def find_island(trigger: gs.Node, graph: gs.Graph):
    """(arithmetic nodes, operands entering them, reductions leaving them): every elementwise
    node over tensors of the trigger's rank connected to it, and the reductions that are the
    only other readers of those tensors; or why it is no such island."""
    rank = _rank(trigger.outputs[0])
    nodes, stack = [], [trigger]
    while stack:
        node = stack.pop()
        if node in nodes:
            continue
        nodes.append(node)
        for tensor in node.inputs[:1] if node.op in UNARY_OPS else node.inputs[:2]:
            producer = tensor.inputs[0] if tensor.inputs else None
            if producer is not None and producer.op in BINARY_OPS | UNARY_OPS and \
                    _rank(tensor) == rank:
                stack.append(producer)
        for reader in node.outputs[0].outputs:
            if reader.op in BINARY_OPS | UNARY_OPS and _rank(reader.outputs[0]) == rank:
                stack.append(reader)
    if any(n.op in BINARY_OPS and len(n.inputs) != 2 for n in nodes):
        return Decline("a variadic Max/Min is in the island")
    operands = []
    for node in nodes:
        for tensor in node.inputs[:1] if node.op in UNARY_OPS else node.inputs[:2]:
            if not (tensor.inputs and tensor.inputs[0] in nodes) and \
                    not any(tensor is t for t in operands):
                operands.append(tensor)
    exits, tensors = [], [n.outputs[0] for n in nodes] + operands
    for tensor in tensors:
        if tensor in graph.outputs:
            return Decline(f"{tensor.name} is a graph output")
        for reader in tensor.outputs:
            if reader in nodes or reader in exits:
                continue
            if reader.op in REDUCE_OPS and reader.inputs[0] is tensor:
                exits.append(reader)
            else:
                return Decline(f"{tensor.name} is read by {reader.op}, not a reduction")
    if not exits:
        return Decline("no reduction brings the island back within the target's rank")
    return nodes, operands, exits


def _groups(shapes: list[tuple], reductions: list[list[int]], rank: int,
            cuts: set[int]) -> list[list[int]]:
    """The axes of ``rank`` merged: adjacent axes alike in every tensor (full or broadcast)
    and every reduction (reduced or kept), none of them in ``cuts`` (a Concat's axis and the
    one after it); axes of extent 1 everywhere dropped."""
    groups, last = [], None
    for axis in range(rank):
        if all(s[axis] == 1 for s in shapes):
            continue
        signature = tuple(s[axis] == 1 for s in shapes) + tuple(axis in r for r in reductions)
        if groups and signature == last and axis not in cuts:
            groups[-1].append(axis)
        else:
            groups.append([axis])
        last = signature
    return groups


def plan_island(nodes, operands, exits, ctx: RewriteContext, like):
    """(nodes removed, the island's inputs, its exits, emit(added)): each operand's merged view
    planned (a movement region's output by its steps, a constant reshaped, a tensor within the
    target's rank viewed), or why not."""
    limit = ctx.target.max_tensor_rank
    if not ctx.target.allows_op("Reshape"):
        return Decline("Reshape is not in the target's ops")
    rank = _rank(nodes[0].outputs[0])
    tensors = [n.outputs[0] for n in nodes] + operands
    stacks = [t.inputs[0] for t in operands if t.inputs and t.inputs[0].op == "Concat"]
    parts = [p for c in stacks for p in c.inputs]
    if any(p.shape is None or len(p.shape) != rank for p in parts):
        return Decline("a Concat in the island joins tensors of other or unknown shapes")
    tensors += parts
    batch = _batch(tensors, rank, ctx.graph, like)
    if isinstance(batch, Decline):
        return batch
    cuts = {a % rank + k for c in stacks for a in [c.attrs.get("axis", 0)] for k in (0, 1)}
    if batch is not None:
        cuts.add(1)                 # a symbolic batch is an axis of its own in every view
    padded = {id(t): (1,) * (rank - len(t.shape)) + tuple(t.shape) for t in tensors}
    reductions = []
    for reducer in exits:
        reduced = reduced_axes(reducer, rank)
        if reduced is None:
            return Decline(f"{reducer.name} reduces over axes not known before running")
        reductions.append(reduced[0])
    groups = _groups(list(padded.values()), reductions, rank, cuts)
    if len(groups) > limit:
        return Decline(f"the island's axes merge to {len(groups)}, not {limit}")
    view = {k: [shape[g[0]] if len(g) == 1 else prod(shape[a] for a in g) for g in groups]
            for k, shape in padded.items()}
    removed, inputs, makers = list(nodes), [], {}
    for operand in operands:
        maker = _operand(operand, view, groups, ctx, like, removed, inputs)
        if isinstance(maker, Decline):
            return maker
        makers[id(operand)] = maker
    removed += exits

    def emit(added: list[gs.Node]) -> None:
        made = {k: maker(added) for k, maker in makers.items()}
        for node in nodes:
            out = variable(ctx, f"{node.outputs[0].name}/merged", node.outputs[0],
                           view[id(node.outputs[0])])
            ins = [made.get(id(t), t) for t in node.inputs]
            added.append(gs.Node(node.op, ctx.fresh(f"{node.name}/merged"), dict(node.attrs),
                                 ins, [out]))
            made[id(node.outputs[0])] = out
        for reducer, axes in zip(exits, reductions):
            merged = [k for k, g in enumerate(groups) if g[0] in axes]
            keepdims = reduced_axes(reducer, rank)[1]
            shape = [1 if a in axes else d for a, d in enumerate(padded[id(reducer.inputs[0])])
                     if keepdims or a not in axes]
            steps = ([("reduce", merged)] if merged else []) + [("reshape", _target(shape))]
            piece = Piece(reducer.outputs[0], steps, [None] * (len(steps) - 1) + [shape], "",
                          reducer)
            emit_piece(ctx, made[id(reducer.inputs[0])], piece, added)

    return removed, inputs, exits, emit


def _operand(tensor: gs.Tensor, views: dict, groups: list[list[int]], ctx: RewriteContext,
             like, removed: list, inputs: list):
    """How ``tensor`` is made in its merged view (``views[id(tensor)]``): a maker(added) ->
    the tensor, or why not. A Concat (torch.stack's Unsqueezes joined: BiFPN) joins its inputs'
    views on the group its axis starts."""
    view = views[id(tensor)]
    value = constant_value(tensor)
    if value is not None:
        merged = gs.Constant(ctx.fresh(f"{tensor.name}/merged"), np.ascontiguousarray(
            value.reshape(view)))
        return lambda added: merged
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is not None and producer.op == "Concat":
        axis = producer.attrs.get("axis", 0) % len(tensor.shape)
        starts = [k for k, g in enumerate(groups) if g[0] == axis]
        if not starts or any(len(p.outputs) != 1 for p in producer.inputs):
            return Decline(f"{producer.name} joins tensors read elsewhere too")
        makers = [_operand(p, views, groups, ctx, like, removed, inputs)
                  for p in producer.inputs]
        if any(isinstance(m, Decline) for m in makers):
            return next(m for m in makers if isinstance(m, Decline))
        removed.append(producer)

        def join(added: list[gs.Node]) -> gs.Tensor:
            out = variable(ctx, f"{tensor.name}/merged", tensor, view)
            added.append(gs.Node("Concat", ctx.fresh(f"{producer.name}/merged"),
                                 {"axis": starts[0]}, [m(added) for m in makers], [out]))
            return out
        return join
    if producer is None or producer.op not in MOVEMENT_OPS:
        if len(tensor.shape) > ctx.target.max_tensor_rank:
            return Decline(f"{tensor.name} is {len(tensor.shape)}-D and not moved from a "
                           "tensor within the target's rank")
        inputs.append(tensor)
        return _viewer(tensor, tensor, Piece(tensor, [("reshape", _target(view))], [view], ""),
                       ctx)
    x, nodes, outputs = find_region(producer, ctx.graph)
    if len(outputs) != 1 or outputs[0] is not tensor:
        return Decline(f"the movement making {tensor.name} has other outputs")
    if x.shape is None or len(x.shape) > ctx.target.max_tensor_rank:
        return Decline(f"{tensor.name} is moved from {x.name}, of no shape within the "
                       "target's rank")
    probed = probe_ramps(x, ctx.graph, like)
    if isinstance(probed, Decline):
        return probed
    ramps, fills = probed
    runs = run_region(x, nodes, outputs, ctx.graph, like, ramps, fills)
    if isinstance(runs, Decline):
        return runs
    maps = [run[0].reshape([d if isinstance(d, int) else run[0].shape[0] for d in view])
            for run in runs]
    piece = plan_piece(tensor, maps, None, ramps, ctx.target)
    if isinstance(piece, Decline):
        return piece
    removed += [n for n in nodes if n not in removed]
    if not any(x is t for t in inputs):
        inputs.append(x)
    return _viewer(tensor, x, piece, ctx)


def _batch(tensors: list[gs.Tensor], rank: int, graph: gs.Graph, like
           ) -> "str | None | Decline":
    """The island's symbolic batch (every symbolic extent is one, on axis 0 of a tensor of
    the island's rank), None where all is static; or why the shapes are not known enough."""
    symbols = set()
    for tensor in tensors:
        shape = tensor.shape
        if shape is None or any(not isinstance(d, int) for d in shape[1:]) or \
                (shape and not isinstance(shape[0], int) and len(shape) != rank):
            return Decline(f"{tensor.name} in the island has a symbolic or unknown shape "
                           f"{shape if shape is not None else '(unknown)'} beyond the batch"
                           + why_shape_unknown(tensor, graph, like))
        if shape and not isinstance(shape[0], int):
            symbols.add(shape[0])
    if len(symbols) > 1:
        return Decline(f"the island's tensors have batches {sorted(map(str, symbols))}")
    return next(iter(symbols), None)


def _target(dims: list) -> list[int]:
    """A Reshape's target: the symbolic batch as -1."""
    return [d if isinstance(d, int) else -1 for d in dims]


def _viewer(tensor: gs.Tensor, source: gs.Tensor, piece: Piece, ctx: RewriteContext):
    """A maker of ``tensor``'s merged view by ``piece``'s steps from ``source``."""
    def make(added: list[gs.Node]) -> gs.Tensor:
        shape = piece.shapes[-1] if piece.shapes else None
        if shape is not None and tensor.shape and not isinstance(tensor.shape[0], int):
            shape = [tensor.shape[0] if d is None and i == 0 else d for i, d in enumerate(shape)]
        out = variable(ctx, f"{tensor.name}/merged", tensor, shape)
        emit_piece(ctx, source, Piece(out, piece.steps, piece.shapes, ""), added)
        return out
    return make
