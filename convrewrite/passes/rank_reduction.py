"""Tensors above the target's rank inside data movement: MobileViT's patch unfold and fold,
pixel shuffle and space-to-depth written as 6-D Reshape -> Transpose -> Reshape, ResNeSt's radix
view [N, r, C, H, W] summed over r. Such a region only ever copies elements of its input x, so
which ones is found by running it on an index ramp (``probe.run_region``; no exporter's spelling
needs a pattern). Each output then becomes, by preference: the fewest axes that move together
(``plan.permutation``) under one Transpose between two Reshapes, several Transposes of at most the
target's rank, or a Gather on a flat view (``plan.movement``). A high-rank output read by a
reduction is reduced over a view that merges the reduced axes. A symbolic batch is probed at two
sizes and must only scale the views. Channel shuffles are the shuffle pass's and come first."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..batch_shapes import batch_multiple, batch_symbol
from ..build.onnx_read import constant_value
from ..decline import Decline
from ..plan.movement import movement_steps, reduction_view, replay, reproduces, tidy, unify
from .emit import int64s, variable
from .probe import QDQ_OPS, model_batches, run_region, why_shape_unknown
from ..rules import rules_named
from .protocol import GraphPass, PassResult, RewriteContext, detach, region_record, register_pass
from .shuffle import find_region, offence, region_grid

REDUCE_OPS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"}
ORDER_FREE = {"ReduceMax", "ReduceMin"}       # reductions whose result no summation order moves
MAX_ELEMENTS = 1 << 23      # probed elements: the ramp and the index maps are int64s (64 MB)
PROBE_BATCHES = (2, 3)                        # for a symbolic batch: distinct, so scaling shows


@dataclass
class Piece:
    """One tensor the rewrite writes, by ``steps`` from x (``plan.movement``); ``shapes``: each
    step's output shape (None where it scales with a symbolic batch)."""

    out: gs.Tensor
    steps: list[tuple]
    shapes: list[list]
    form: str
    reducer: gs.Node | None = None


@register_pass
class RankReduction(GraphPass):
    name = "rank_reduction"
    fixes = rules_named("max_tensor_rank")

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        if ctx.target.max_tensor_rank is None:
            return outcome
        for node in list(ctx.graph.nodes):
            if not node.outputs:                  # part of a region rewritten this round
                continue
            violation = offence(node, ctx.target, ctx.graph)
            if violation is None or violation.rule != "max_tensor_rank":
                continue
            x, nodes, outputs = find_region(node, ctx.graph)
            region = plan_region(x, nodes, outputs, ctx, like)
            if isinstance(region, Decline):
                outcome.decline(node, region.within(self.name))
                continue
            outcome.add(self._rewrite(x, *region, violation, ctx, like))
        return outcome

    def _rewrite(self, x, nodes, pieces, violation, ctx, like):
        added = []
        exact = all(p.reducer is None or p.reducer.op in ORDER_FREE for p in pieces)
        record = region_record(self.name, nodes, x, [p.out for p in pieces], ctx, like,
                               "rank reduced: " + "; ".join(p.form for p in pieces), added,
                               "exact" if exact else "reassociating", rules=[violation],
                               macs_before=0, macs_after=0)
        for piece in pieces:    # after the record: an output's Shape can feed the region's own
            emit_piece(ctx, x, piece, added)    # Reshape targets (Swin), and the region alone
        record.nodes_after = len(added)         # must not see the replacement writing it
        detach(nodes)
        ctx.graph.nodes.extend(added)
        return record


def probe_ramps(x: gs.Tensor, graph: gs.Graph, like: onnx.ModelProto):
    """(index ramps over x, the model batch each stands for): one when x's shape is static, one
    per PROBE_BATCHES model batch when only its batch is symbolic (x's batch found from the
    model's, where the region's shapes are computed from the model's input)."""
    shape = list(x.shape) if x.shape is not None else None
    if shape is None or not shape or not all(isinstance(d, int) for d in shape[1:]):
        return Decline(f"the region's input {x.name} has a symbolic shape "
                       f"{shape if shape is not None else '(unknown)'}: which element goes "
                       "where is not fixed" + why_shape_unknown(x, graph, like))
    fills = None
    multiple = batch_multiple(shape[0], batch_symbol(like))
    if isinstance(shape[0], int):
        batches = [shape[0]]
    elif multiple is not None:          # learned as N*k (Swin's windows on the batch axis)
        batches, fills = [multiple * b for b in PROBE_BATCHES], list(PROBE_BATCHES)
    else:
        found = model_batches(x, graph, like, PROBE_BATCHES)
        batches = found if found and len(set(found)) == len(found) else list(PROBE_BATCHES)
        fills = list(PROBE_BATCHES) if batches is found else None
    total = max(batches) * prod(shape[1:])
    if total > MAX_ELEMENTS or total == 0:
        return Decline(f"{total} elements: too many (or none) to map one by one")
    return [np.arange(b * prod(shape[1:]), dtype=np.int64).reshape(b, *shape[1:])
            for b in batches], fills


def plan_region(x: gs.Tensor, nodes: list[gs.Node], outputs: list[gs.Tensor],
                ctx: RewriteContext, like: onnx.ModelProto):
    """(the nodes replaced, the Pieces written): every output within the target's rank, or one
    above it that only reductions read (those join the region); or why not."""
    limit = ctx.target.max_tensor_rank
    if x.shape is not None and len(x.shape) > limit:
        return Decline(f"the region's input {x.name} is {len(x.shape)}-D itself")
    nodes, outputs = _without_final_qdq(nodes, outputs)
    if isinstance(region_grid(x, nodes), Decline):
        return Decline("the region requantizes to another grid on the way (not a pure movement)")
    if not ctx.target.allows_op("Reshape"):
        return Decline("Reshape is not in the target's ops")
    probed = probe_ramps(x, ctx.graph, like)
    if isinstance(probed, Decline):
        return probed
    ramps, fills = probed
    runs = run_region(x, nodes, outputs, ctx.graph, like, ramps, fills)
    if isinstance(runs, Decline):
        return runs
    region, pieces = list(nodes), []
    for k, out in enumerate(outputs):
        maps = [run[k] for run in runs]
        if maps[0].ndim <= limit:
            writers = [(out, None)]
        else:
            readers = list(out.outputs)
            if out in ctx.graph.outputs or not readers or \
                    any(r.op not in REDUCE_OPS for r in readers):
                users = sorted({r.op for r in readers}) or ["the graph's outputs"]
                return Decline(f"an output of the region is {maps[0].ndim}-D and read by "
                               f"{', '.join(users)}")
            writers = [(r.outputs[0], r) for r in readers]
            region += readers
        for tensor, reducer in writers:
            piece = plan_piece(tensor, maps, reducer, ramps, ctx.target)
            if isinstance(piece, Decline):
                return piece
            pieces.append(piece)
    return region, pieces


def _without_final_qdq(nodes: list[gs.Node], outputs: list[gs.Tensor]):
    """The region less the Q/DQ at its ends: they quantize what the movement made and stay,
    reading the rewrite's float output (a QDQ model's conv still reads a DequantizeLinear).
    Those inside must keep x's own grid, and are then dropped: moving values on one grid and
    rounding them to it again is exact."""
    nodes, ends = list(nodes), []
    for out in outputs:
        while out.inputs and out.inputs[0] in nodes and out.inputs[0].op in QDQ_OPS:
            nodes.remove(out.inputs[0])
            out = out.inputs[0].inputs[0]
        if not any(out is e for e in ends):
            ends.append(out)
    return nodes, ends


def plan_piece(out: gs.Tensor, maps: list[np.ndarray], reducer: gs.Node | None,
           ramps: list[np.ndarray], target) -> "Piece | Decline":
    """The steps writing ``out`` (the region's output, or ``reducer`` of it), planned at each
    probe's batch, made one, and replayed against every probe."""
    limit = target.max_tensor_rank
    plans, expected, form = [], [], ""
    for index, ramp in zip(maps, ramps):
        tail, want = [], index
        if reducer is not None:
            reduced = reduced_axes(reducer, index.ndim)
            if reduced is None:
                return Decline(f"{reducer.name} reduces over axes not known before running")
            axes, keepdims = reduced
            want = index.sum(axis=tuple(axes), keepdims=keepdims)
            if want.ndim > limit:
                return Decline(f"{reducer.name} keeps the {want.ndim}-D shape")
            view = reduction_view(index.shape, axes, limit)
            if isinstance(view, Decline):
                return view.within(reducer.name)
            view, reduce_axes = view
            if view:
                index, tail = index.reshape(view), [("reduce", reduce_axes)]
            else:
                index = index.reshape(want.shape)
            tail.append(("reshape", list(want.shape)))
        steps = movement_steps(index, ramp.size, limit, target.allows_op)
        if isinstance(steps, Decline):
            return steps
        steps, form = steps
        plans.append(steps + tail)
        expected.append(want)
    steps = unify(plans)
    if isinstance(steps, Decline):
        return steps
    steps = tidy(steps, ramps)
    if not all(reproduces(steps, r, e) for r, e in zip(ramps, expected)):
        return Decline("the planned steps do not reproduce the probe (a planner bug)")
    traces = [replay(steps, r)[1] for r in ramps]
    shapes = [[d if all(t[k][i] == d for t in traces) else None for i, d in enumerate(shape)]
              for k, shape in enumerate(traces[0])]
    if reducer is not None:
        form += f", then {reducer.op} over a {len(index.shape)}-D view"
    return Piece(out, steps, shapes, form, reducer)


def node_axes(node: gs.Node, rank: int) -> list[int] | None:
    """A node's constant axes (its attribute, or its second input from opset 13/18 on), made
    non-negative and sorted; [] where it has none, None where they are computed."""
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1].name:
        value = constant_value(node.inputs[1])
        if value is None:
            return None
        axes = value.reshape(-1).tolist()
    return sorted({int(a) % rank for a in axes or ()})


def reduced_axes(node: gs.Node, rank: int) -> tuple[list[int], bool] | None:
    """(axes, keepdims) of a reduction with constant axes."""
    axes = node_axes(node, rank)
    if axes is None:
        return None
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return axes, bool(node.attrs.get("keepdims", 1))


def emit_piece(ctx: RewriteContext, x: gs.Tensor, piece: Piece, added: list[gs.Node]) -> None:
    """The nodes of ``piece.steps`` from x, the last one writing ``piece.out``."""
    out = piece.out
    if out.shape is None and piece.shapes:
        out.shape = [x.shape[0] if d is None and i == 0 else d
                     for i, d in enumerate(piece.shapes[-1])]
    if not piece.steps:
        added.append(gs.Node("Identity", ctx.fresh(f"{out.name}/same"), {}, [x], [out]))
    current = x
    for k, ((kind, arg), shape) in enumerate(zip(piece.steps, piece.shapes)):
        result = out if k == len(piece.steps) - 1 else variable(ctx, f"{out.name}/{kind}", x,
                                                                 shape)
        name = ctx.fresh(f"{out.name}/{kind}")
        if kind == "reshape":
            node = gs.Node("Reshape", name, {}, [current, int64s(ctx, f"{name}.shape", arg)],
                           [result])
        elif kind == "transpose":
            node = gs.Node("Transpose", name, {"perm": list(arg)}, [current], [result])
        elif kind == "gather":
            node = gs.Node("Gather", name, {"axis": 1},
                           [current, gs.Constant(ctx.fresh(f"{name}.indices"), arg)], [result])
        elif kind == "slice":
            node = _slice(ctx, name, current, arg, result)
        else:
            node = _reduce(ctx, piece.reducer, name, current, arg, result)
        added.append(node)
        current = result


def _slice(ctx: RewriteContext, name: str, x: gs.Tensor, arg: list, out: gs.Tensor) -> gs.Node:
    """Slice with step 1 (starts, ends and axes inputs from opset 10, attributes before)."""
    starts, ends, axes = arg
    if ctx.opset < 10:
        return gs.Node("Slice", name, {"starts": starts, "ends": ends, "axes": axes}, [x], [out])
    return gs.Node("Slice", name, {}, [x, int64s(ctx, f"{name}.starts", starts),
                                       int64s(ctx, f"{name}.ends", ends),
                                       int64s(ctx, f"{name}.axes", axes)], [out])


def _reduce(ctx: RewriteContext, reducer: gs.Node, name: str, x: gs.Tensor, axes: list[int],
            out: gs.Tensor) -> gs.Node:
    """``reducer``'s op over ``axes`` of the merged view, keepdims 0 (axes an input from opset
    18, ReduceSum's from 13)."""
    attrs = {k: v for k, v in reducer.attrs.items()
             if k not in ("axes", "keepdims", "noop_with_empty_axes")}
    attrs["keepdims"] = 0
    inputs = [x]
    if ctx.opset >= 18 or (reducer.op == "ReduceSum" and ctx.opset >= 13):
        inputs.append(int64s(ctx, f"{name}.axes", list(axes)))
    else:
        attrs["axes"] = list(axes)
    return gs.Node(reducer.op, name, attrs, inputs, [out])
