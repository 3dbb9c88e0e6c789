"""A Flatten or Reshape that merges axes into one longer than any tensor may be
(``max_tensor_dim``: EfficientDet flattens each level's 810 x 32 x 32 class map into one axis of
829440, Vela 3 takes 65535), read only by Concats along that axis (the heads' outputs joined),
is run per piece of the first merged input axis: the input cut (Split, else Slices) into pieces
whose merged length fits, each viewed the same way, and the pieces fed to the Concat in place of
the whole, so no tensor over the limit is made. A view of a cut is the cut of the view along the
merged axis (the merged axis's outermost digit), and a Concat of the pieces in order is the
Concat of the whole: exact. The Concat's own output, where it is the model's, stays (the
model's interface: ``pipeline.tensor_legality`` names it)."""

from __future__ import annotations

from math import prod

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx_read import constant_value
from ..decline import Decline
from ..gs_order import cleanup_and_toposort
from ..lowerings.channel_split import use_split
from ..plan.batch import even_chunks
from ..plan.limits import missing_ops
from ..rules import rules_named
from ..tensor_limits import dim_offence, limits_tensors, target_shape
from .emit import builder
from .protocol import GraphPass, PassResult, RewriteContext, detach, region_record, register_pass

VIEWS = frozenset({"Flatten", "Reshape"})


def merged_group(x_shape, y_shape, axis: int) -> tuple[int, int] | None:
    """[i0, i1) of the input axes that merge into output ``axis``: the axes before it the same
    (as dims, symbols too), and the output's extent their product; None for any other view."""
    if axis > len(x_shape) or list(x_shape[:axis]) != list(y_shape[:axis]):
        return None
    extents = target_shape(x_shape)
    for stop in range(axis + 1, len(x_shape) + 1):
        group = extents[axis:stop]
        if None in group:
            return None
        if prod(group) == y_shape[axis]:
            return axis, stop
    return None


def _concat_readers(out: gs.Tensor, graph: gs.Graph, axis: int) -> list[gs.Node] | Decline:
    if any(out is t for t in graph.outputs):
        return Decline(f"{out.name} is the model's own output")
    readers = list(out.outputs)
    rank = len(out.shape)
    needs = [r for r in readers if r.op != "Concat" or r.attrs.get("axis", 0) % rank != axis]
    if needs or not readers:
        return Decline(f"{needs[0].op if needs else 'nothing'} reads {out.name} whole")
    return readers


@register_pass
class ViewPieces(GraphPass):
    name = "view_pieces"
    fixes = rules_named("max_tensor_dim")

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        if not limits_tensors(ctx.target):
            return outcome
        by_concat: dict[int, tuple[gs.Node, list]] = {}
        for node in list(ctx.graph.nodes):
            if node.op not in VIEWS or node.domain or not node.outputs:
                continue
            offence = dim_offence(node, ctx.target.max_tensor_dim)
            if offence is None or offence.tensor is not node.outputs[0]:
                continue
            planned = self._plan(node, offence.axis, ctx)
            if isinstance(planned, Decline):
                outcome.decline(node, planned.within(self.name))
                continue
            group, concat, ranges, inner = planned
            by_concat.setdefault(id(concat), (concat, []))[1].append(
                (node, offence, group, ranges, inner))
        # one record per Concat: each view it reads is cut in the same rewrite, so no record's
        # boundary (a view's output) is rewritten away by another's
        for concat, views in by_concat.values():
            outcome.add(self._rewrite(concat, views, ctx, like))
        if outcome.modified:
            cleanup_and_toposort(ctx.graph)
        return outcome

    def _plan(self, node: gs.Node, axis: int, ctx: RewriteContext):
        x, out = node.inputs[0], node.outputs[0]
        limit = ctx.target.max_tensor_dim
        if x.shape is None:
            return Decline("the view's input shape is unknown")
        group = merged_group(x.shape, out.shape, axis)
        if group is None:
            return Decline(f"output axis {axis} is not a merge of whole input axes")
        if node.op == "Reshape" and constant_value(node.inputs[1]) is None:
            return Decline("the Reshape's shape is computed in the graph")
        readers = _concat_readers(out, ctx.graph, axis)
        if isinstance(readers, Decline):
            return readers
        if len(readers) > 1:
            return Decline(f"{len(readers)} Concats read {out.name}")
        inner = prod(target_shape(x.shape)[group[0] + 1:group[1]])
        if inner > limit:
            return Decline(f"one item of input axis {group[0]} is {inner} long, over {limit}")
        missing = missing_ops(ctx.target, ["Concat", "Split" if use_split(ctx.target)
                                           else "Slice"])
        if missing:
            return missing
        return group, readers[0], list(even_chunks(x.shape[group[0]], limit // inner)), inner

    def _rewrite(self, concat, views, ctx, like):
        added: list[gs.Node] = []
        b = builder(ctx, added)
        pieces_of, hows = {}, []
        for node, offence, group, ranges, inner in views:
            x, out, base = node.inputs[0], node.outputs[0], node.name
            axis = offence.axis
            cuts = b.split_axis(x, group[0], ranges, f"{base}/piece_split",
                                use_split(ctx.target), f"{base}/piece_slice")
            pieces = []
            for i, (cut, (a, z)) in enumerate(zip(cuts, ranges)):
                shape = list(out.shape)
                shape[axis] = (z - a) * inner
                piece = b.variable(f"{base}/piece{i}.out", out, shape)
                inputs = [cut]
                if node.op == "Reshape":
                    target = np.array(constant_value(node.inputs[1]), dtype=np.int64)
                    if target[axis] != -1:
                        target[axis] = shape[axis]
                    inputs.append(gs.Constant(ctx.fresh(f"{base}/piece{i}.shape"), target))
                b.node(node.op, ctx.fresh(f"{base}/piece{i}"), dict(node.attrs), inputs,
                       [piece])
                pieces.append(piece)
            pieces_of[id(out)] = pieces
            sizes = sorted({(z - a) * inner for a, z in ranges})
            hows.append(f"{node.op} in {len(ranges)} pieces of {' or '.join(map(str, sizes))} "
                        f"on axis {axis}")
        joined = [p for t in concat.inputs for p in pieces_of.get(id(t), [t])]
        b.node("Concat", ctx.fresh(f"{concat.name}/pieces"), dict(concat.attrs), joined,
               list(concat.outputs))
        how = (f"{'; '.join(hows)} (target: {ctx.target.max_tensor_dim}), fed to {concat.name} "
               "in place of the whole")
        nodes = [v[0] for v in views]
        data = [v[0].inputs[0] for v in views] + [
            t for t in concat.inputs if id(t) not in pieces_of and t.name
            and constant_value(t) is None]
        record = region_record(self.name, nodes + [concat], data, list(concat.outputs), ctx,
                               like, how, added, "exact",
                               rules=[v[1].violation for v in views], macs_before=0,
                               macs_after=0)
        detach(nodes + [concat])
        ctx.graph.nodes.extend(added)
        return record
