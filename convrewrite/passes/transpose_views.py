"""Transposes over tensors the target's every-op limits reject (``max_tensor_batch``: an
attention's [windows, tokens, heads, dim] views with the patches or windows folded into the
batch, 128 of them in MobileViT) run as Transposes over views the target takes
(``plan.legal_views``: a rank-3 view has no batch to limit), each between Reshapes, which the
limit exempts: two Transposes in place of 128 per-item ones and their Split and Concat. The
output keeps its tensor, so every reader and every other record's boundary stays as it was; a
Reshape only renames the elements' indices and a Transpose moves each once: exact. A symbolic
batch (a TorchScript export's ``N*128``) is counted at 1, as the target runs it, and left to the
one Reshape axis that holds it (-1), so the rewrite is exact at every batch."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..decline import Decline
from ..gs_order import cleanup_and_toposort
from ..plan.legal_views import ViewLimits, ViewPlan, plan_views
from ..plan.limits import missing_ops
from ..rules import rules_named
from ..tensor_limits import limits_tensors, merged_batch, target_shape, tensor_offences
from .emit import builder
from .protocol import GraphPass, PassResult, RewriteContext, detach, region_record, register_pass


def view_limits(target) -> ViewLimits:
    return ViewLimits(target.max_tensor_rank, target.max_tensor_batch, target.max_tensor_dim)


def _symbolic_axis(shape) -> int | None | Decline:
    """The one axis of ``shape`` that is a multiple of the batch symbol (None: all static)."""
    extents = target_shape(shape)
    unknown = [a for a, (d, e) in enumerate(zip(shape, extents)) if not isinstance(d, int)]
    if any(extents[a] is None for a in unknown):
        return Decline(f"the shape {list(shape)} has an unknown extent")
    if len(unknown) > 1:
        return Decline(f"the shape {list(shape)} has {len(unknown)} symbolic extents")
    return unknown[0] if unknown else None


def plan_transpose(node: gs.Node, ctx: RewriteContext) -> ViewPlan | Decline:
    x, out = node.inputs[0], node.outputs[0]
    if x.shape is None or out.shape is None:
        return Decline("the Transpose's shapes are unknown")
    for shape in (x.shape, out.shape):
        found = _symbolic_axis(shape)
        if isinstance(found, Decline):
            return found
    missing = missing_ops(ctx.target, ["Reshape", "Transpose"])
    if missing:
        return missing
    rank = len(x.shape)
    perm = [int(p) % rank for p in node.attrs.get("perm", list(range(rank))[::-1])]
    return plan_views(target_shape(x.shape), perm, view_limits(ctx.target))


def _reshape_to(extents, symbolic_axis: int | None) -> list[int]:
    return [-1 if a == symbolic_axis else e for a, e in enumerate(extents)]


@register_pass
class TransposeViews(GraphPass):
    name = "transpose_views"
    fixes = rules_named("max_tensor_batch")

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        if not limits_tensors(ctx.target):
            return outcome
        for node in list(ctx.graph.nodes):
            if node.op != "Transpose" or node.domain:
                continue
            offences = tensor_offences(node, ctx.target)
            if not offences:
                continue
            plan = plan_transpose(node, ctx)
            if isinstance(plan, Decline):
                outcome.decline(node, plan.within(self.name))
                continue
            outcome.add(self._rewrite(node, plan, offences, ctx, like))
        if outcome.modified:
            cleanup_and_toposort(ctx.graph)
        return outcome

    def _rewrite(self, node: gs.Node, plan: ViewPlan, offences, ctx, like):
        added: list[gs.Node] = []
        b = builder(ctx, added)
        x, out, base = node.inputs[0], node.outputs[0], node.name
        held = _symbolic_axis(x.shape)
        batch_atom = next((k for k, atom in enumerate(plan.atoms) if held in atom), None)
        current = x
        for k, (view, perm) in enumerate(zip(plan.steps.views, plan.steps.perms)):
            at = None if batch_atom is None else plan.view_axis_of(k, batch_atom)
            viewed = b.reshape(current, _reshape_to(view, at), f"{base}/view{k}",
                               f"{base}/view{k}.shape")
            viewed.shape = [merged_batch(x.shape[held], e) if a == at else e
                            for a, e in enumerate(view)]
            moved = [viewed.shape[p] for p in perm]
            current = b.variable(f"{base}/step{k}.out", x, moved)
            b.node("Transpose", ctx.fresh(f"{base}/step{k}"), {"perm": list(perm)}, [viewed],
                   [current])
        b.reshape(current, _reshape_to(target_shape(out.shape), _symbolic_axis(out.shape)),
                  f"{base}/view_out", f"{base}/view_out.shape", out=out)
        views = " then ".join(f"[{', '.join(map(str, v))}] by {list(p)}"
                              for v, p in zip(plan.steps.views, plan.steps.perms))
        how = (f"Transpose as {len(plan.steps.views)} Transpose(s) over views the target takes"
               f"{' (the batch stays symbolic)' if held is not None else ''}: "
               f"{views or 'a Reshape alone (only extent-1 axes move)'}")
        record = region_record(self.name, [node], x, [out], ctx, like, how, added, "exact",
                               rules=[o.violation for o in offences], macs_before=0,
                               macs_after=0)
        detach([node])
        ctx.graph.nodes.extend(added)
        return record
