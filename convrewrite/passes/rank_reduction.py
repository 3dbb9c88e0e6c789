"""Tensors above the target's rank inside data movement: MobileViT's patch unfold and fold,
pixel shuffle and space-to-depth written as 6-D Reshape -> Transpose -> Reshape, ResNeSt's radix
view [N, r, C, H, W] summed over r. Such a region only ever copies elements of its input x, so
which ones is found by running it on an index ramp (``probe.run_region``; no exporter's spelling
needs a pattern). Each output then becomes, by preference: the fewest axes that move together
(``plan.permutation``) under one Transpose between two Reshapes, several Transposes of at most the
target's rank, or a Gather on a flat view. A 5-D output read by a reduction is reduced over a
view that merges the reduced axes. Channel shuffles are the shuffle pass's and come first."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx_read import constant_value
from ..decline import Decline
from ..plan.permutation import plan_transposes
from .emit import int64s, variable
from .probe import QDQ_OPS, run_region
from .protocol import GraphPass, PassResult, RewriteContext, detach, region_record
from .shuffle import find_region, offence

REDUCE_OPS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"}
ORDER_FREE = {"ReduceMax", "ReduceMin"}       # reductions whose result no summation order moves
MAX_ELEMENTS = 1 << 26                        # the ramp and a Gather's indices are int64s


@dataclass
class Piece:
    """One tensor the rewrite writes: ``out = reduce(x.flat[index])`` (``reducer`` None: no
    reduction), ``index`` already on the view the reduction runs over, ``form`` how it is moved."""

    out: gs.Tensor
    index: np.ndarray
    form: object                 # a plan.permutation.Transposes, or "gather"
    reducer: gs.Node | None = None
    reduce_axes: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()  # of ``out``


class RankReduction(GraphPass):
    name = "rank_reduction"

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
        added, forms = [], []
        for piece in pieces:
            forms.append(emit_piece(ctx, x, piece, added))
        exact = all(p.reducer is None or p.reducer.op in ORDER_FREE for p in pieces)
        record = region_record(self.name, nodes, x, [p.out for p in pieces], ctx, like,
                               "rank reduced: " + "; ".join(forms), added,
                               "exact" if exact else "reassociating", rules=[violation],
                               macs_before=0, macs_after=0)
        detach(nodes)
        ctx.graph.nodes.extend(added)
        return record


def plan_region(x: gs.Tensor, nodes: list[gs.Node], outputs: list[gs.Tensor],
                ctx: RewriteContext, like: onnx.ModelProto):
    """(the nodes replaced, the Pieces written): every output within the target's rank, or one
    above it that only reductions read (those join the region, each reducing a view whose
    adjacent reduced axes are merged); or why the region cannot be rewritten."""
    limit = ctx.target.max_tensor_rank
    if x.shape is None or not all(isinstance(d, int) for d in x.shape):
        return Decline(f"the region's input {x.name} has a symbolic shape "
                       f"{list(x.shape) if x.shape is not None else '(unknown)'}: which element "
                       "goes where is not fixed")
    if len(x.shape) > limit:
        return Decline(f"the region's input {x.name} is {len(x.shape)}-D itself")
    if any(n.op in QDQ_OPS for n in nodes):
        return Decline("the region requantizes on the way (Q/DQ inside)")
    if not ctx.target.allows_op("Reshape"):
        return Decline("Reshape is not in the target's ops")
    total = prod(x.shape)
    if total > MAX_ELEMENTS:
        return Decline(f"{total} elements are too many to map one by one")
    runs = run_region(x, nodes, outputs, ctx.graph, like,
                      [np.arange(total, dtype=np.int64).reshape(x.shape)])
    if isinstance(runs, Decline):
        return runs
    region, pieces = list(nodes), []
    for out, index in zip(outputs, runs[0]):
        if index.ndim <= limit:
            piece = Piece(out, index, None, shape=index.shape)
        else:
            readers = list(out.outputs)
            if out in ctx.graph.outputs or not readers or \
                    any(r.op not in REDUCE_OPS for r in readers):
                users = sorted({r.op for r in readers}) or ["the graph's outputs"]
                return Decline(f"an output of the region is {index.ndim}-D and read by "
                               f"{', '.join(users)}")
            for reader in readers:
                piece = _reduction_piece(reader, index, limit)
                if isinstance(piece, Decline):
                    return piece
                region.append(reader)
                pieces.append(piece)
            continue
        pieces.append(piece)
    for piece in pieces:
        piece.form = _form(piece.index, total, ctx.target)
        if isinstance(piece.form, Decline):
            return piece.form
    return region, pieces


def _form(index: np.ndarray, total: int, target) -> object:
    """Transposes over merged axes (a permutation, the target taking Transpose), else a Gather."""
    if target.allows_op("Transpose") and index.size == total:
        plan = plan_transposes(index, target.max_tensor_rank)
        if plan is not None:
            return plan
    if target.allows_op("Gather"):
        return "gather"
    return Decline("the target takes no Gather, and the region is no permutation of merged "
                   "axes that its Transpose could do")


def _reduction_piece(reducer: gs.Node, index: np.ndarray, limit: int) -> "Piece | Decline":
    """``reducer`` of the region's output ``index`` as one reduction over a view of at most
    ``limit`` axes: adjacent axes reduced alike merge, single-element axes vanish."""
    reduced = _reduced_axes(reducer, index.ndim)
    if reduced is None:
        return Decline(f"{reducer.name} reduces over axes not known before running")
    axes, keepdims = reduced
    shape = tuple(1 if a in axes else d for a, d in enumerate(index.shape)
                  if keepdims or a not in axes)
    if len(shape) > limit:
        return Decline(f"{reducer.name} keeps the {len(shape)}-D shape")
    groups: list[list] = []           # [reduced?, extent]
    for axis, extent in enumerate(index.shape):
        if extent == 1:
            continue
        if groups and groups[-1][0] == (axis in axes):
            groups[-1][1] *= extent
        else:
            groups.append([axis in axes, extent])
    if not any(r for r, _ in groups):             # over single elements: a view of the input
        return Piece(reducer.outputs[0], index.reshape(shape), None, shape=shape)
    view = [e for _, e in groups]
    if len(view) > limit:
        return Decline(f"{reducer.name} reduces {len(view)} separate runs of axes")
    return Piece(reducer.outputs[0], index.reshape(view), None, reducer,
                 tuple(k for k, (r, _) in enumerate(groups) if r), shape)


def _reduced_axes(node: gs.Node, rank: int) -> tuple[list[int], bool] | None:
    """(axes, keepdims) of a reduction with constant axes."""
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1].name:
        value = constant_value(node.inputs[1])
        if value is None:
            return None
        axes = value.reshape(-1).tolist()
    if axes is None or len(axes) == 0:
        if node.attrs.get("noop_with_empty_axes", 0):
            return None
        axes = range(rank)
    return sorted({int(a) % rank for a in axes}), bool(node.attrs.get("keepdims", 1))


def emit_piece(ctx: RewriteContext, x: gs.Tensor, piece: Piece, added: list[gs.Node]) -> str:
    """The nodes writing ``piece.out``; what they are, for the record."""
    out = piece.out
    if out.shape is None:
        out.shape = list(piece.shape)
    if piece.reducer is None:
        return _move(ctx, x, piece.index, piece.form, out, added)
    merged = variable(ctx, f"{out.name}/merged", x, list(piece.index.shape))
    form = _move(ctx, x, piece.index, piece.form, merged, added)
    kept = [e for k, e in enumerate(piece.index.shape) if k not in piece.reduce_axes]
    reduced = variable(ctx, f"{out.name}/reduced", x, kept)
    op = piece.reducer.op
    attrs = {k: v for k, v in piece.reducer.attrs.items()
             if k not in ("axes", "keepdims", "noop_with_empty_axes")}
    attrs["keepdims"] = 0
    inputs = [merged]
    if ctx.opset >= 18 or (op == "ReduceSum" and ctx.opset >= 13):
        inputs.append(int64s(ctx, f"{out.name}/reduced.axes", list(piece.reduce_axes)))
    else:
        attrs["axes"] = list(piece.reduce_axes)
    added.append(gs.Node(op, ctx.fresh(f"{piece.reducer.name}/merged"), attrs, inputs,
                         [reduced]))
    _reshape(ctx, reduced, list(piece.shape), out, added, final=True)
    return f"{form}, then {op} over {list(piece.index.shape)} axes {list(piece.reduce_axes)}"


def _move(ctx: RewriteContext, x: gs.Tensor, index: np.ndarray, form, out: gs.Tensor,
          added: list[gs.Node]) -> str:
    """``out = x.flat[index]`` in the planned form."""
    if form == "gather":
        return _gather(ctx, x, index, out, added)
    current = x
    for view, perm in zip(form.views, form.perms):
        current = _reshape(ctx, current, list(view), out, added)
        if list(perm) != sorted(perm):
            moved = variable(ctx, f"{out.name}/moved", x, [view[p] for p in perm])
            added.append(gs.Node("Transpose", ctx.fresh(f"{out.name}/transpose"),
                                 {"perm": list(perm)}, [current], [moved]))
            current = moved
    _reshape(ctx, current, list(index.shape), out, added, final=True)
    if len(form.views) == 1:
        return f"one Transpose over {len(form.views[0])} merged axes"
    return f"{len(form.views)} Transposes of at most {form.rank} axes"


def _reshape(ctx: RewriteContext, x: gs.Tensor, shape: list[int], out: gs.Tensor,
             added: list[gs.Node], final: bool = False) -> gs.Tensor:
    """``x`` viewed as ``shape``: itself when it already is, unless it must be ``out``."""
    if list(x.shape) == shape and not final:
        return x
    result = out if final else variable(ctx, f"{out.name}/view", x, shape)
    if list(x.shape) == shape:
        added.append(gs.Node("Identity", ctx.fresh(f"{out.name}/same"), {}, [x], [result]))
    else:
        added.append(gs.Node("Reshape", ctx.fresh(f"{out.name}/view"), {},
                             [x, int64s(ctx, f"{out.name}/view.shape", shape)], [result]))
    return result


def _gather(ctx: RewriteContext, x: gs.Tensor, index: np.ndarray, out: gs.Tensor,
            added: list[gs.Node]) -> str:
    """Rows of an [N, -1] view when the map keeps the batch axis (one index per sample
    element), else one row of every element."""
    batch, per_sample = x.shape[0], prod(x.shape[1:])
    rows = index.reshape(batch, -1) if index.ndim and index.shape[0] == batch else None
    keeps = rows is not None and np.array_equal(
        rows, rows[:1] + np.arange(batch, dtype=np.int64)[:, None] * per_sample)
    flat = _reshape(ctx, x, [batch, per_sample] if keeps else [1, prod(x.shape)], out, added)
    indices = np.ascontiguousarray(rows[0] if keeps else index.reshape(-1), dtype=np.int64)
    picked = variable(ctx, f"{out.name}/picked", x, [flat.shape[0], int(indices.size)])
    added.append(gs.Node("Gather", ctx.fresh(f"{out.name}/gather"), {"axis": 1},
                         [flat, gs.Constant(ctx.fresh(f"{out.name}/gather.indices"), indices)],
                         [picked]))
    _reshape(ctx, picked, list(index.shape), out, added, final=True)
    return f"a Gather of {indices.size} elements{' per sample' if keeps else ''}"
