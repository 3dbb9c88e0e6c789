"""A stack summed over its new axis: ``torch.stack(xs, dim=d).sum(dim=d)`` (effdet's BiFPN "fast
attention" fusion stacks its weighted levels on a new last axis and sums them), exported by
both of PyTorch's exporters as one Unsqueeze per x (a tensor one axis above x), a Concat on that
axis and a ReduceSum (or ReduceMean) over it. The stacked tensor is above a rank-4 target's rank
wherever x is 4-D; the sum of the x is the same value without it: a chain of Adds (times 1/k for
a mean), no tensor above x's rank. The reduction order changes, so it is checked as a regrouped
sum (reassociating tolerance)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..decline import Decline
from ..rules import Violation, rules_named
from .emit import builder
from .protocol import GraphPass, PassResult, RewriteContext, detach, region_record, register_pass
from .rank_reduction import node_axes, reduced_axes

STACK_REDUCE_OPS = {"ReduceSum", "ReduceMean"}


def match(concat: gs.Node, graph: gs.Graph):
    """(the stacked tensors, the Unsqueezes, the reduction) when ``concat`` stacks Unsqueezed
    tensors on their new axis and only a ReduceSum/ReduceMean over exactly that axis (keepdims
    0) reads the stack; else None."""
    out = concat.outputs[0]
    if out.shape is None or len(out.outputs) != 1 or out in graph.outputs:
        return None
    rank = len(out.shape)
    axis = concat.attrs.get("axis", 0) % rank
    reduce = out.outputs[0]
    if reduce.op not in STACK_REDUCE_OPS or reduce.inputs[0] is not out or \
            reduced_axes(reduce, rank) != ([axis], False):
        return None
    xs, unsqueezes = [], []
    for t in concat.inputs:
        producer = t.inputs[0] if t.inputs else None
        if producer is None or producer.op != "Unsqueeze" or len(t.outputs) != 1 or \
                t in graph.outputs or node_axes(producer, rank) != [axis]:
            return None
        xs.append(producer.inputs[0])
        unsqueezes.append(producer)
    # Equal shapes follow (a Concat of size-1 slices on its axis), even where shape inference
    # names a TorchScript export's unknown dims apart (['unk__136', ..] and ['unk__142', ..]).
    if any(x.shape is None or len(x.shape) != rank - 1 for x in xs):
        return None
    return xs, unsqueezes, reduce


@register_pass
class StackReduction(GraphPass):
    name = "stack_reduction"
    fixes = rules_named("max_tensor_rank")

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        limit = ctx.target.max_tensor_rank
        if limit is None:
            return outcome
        for concat in list(ctx.graph.nodes):
            if concat.op != "Concat" or not concat.outputs or concat.outputs[0].shape is None \
                    or len(concat.outputs[0].shape) <= limit:
                continue
            found = match(concat, ctx.graph)
            if found is None:
                continue
            xs, unsqueezes, reduce = found
            needed = (["Add"] if len(xs) > 1 else ["Identity"] * (reduce.op == "ReduceSum")) + \
                ["Mul"] * (reduce.op == "ReduceMean")
            missing = [op for op in needed if not ctx.target.allows_op(op)]
            if missing:
                for node in unsqueezes:
                    outcome.decline(node, Decline(
                        f"the stack summed over its axis needs {missing[0]}, which is not in the "
                        "target's ops").within(self.name))
                continue
            rank = len(concat.outputs[0].shape)
            outcome.add(self._rewrite(xs, unsqueezes, concat, reduce, ctx, like, Violation(
                "max_tensor_rank", rank, limit, f"Unsqueeze makes a {rank}-D tensor; the target "
                f"handles at most {limit}-D")))
        return outcome

    def _rewrite(self, xs, unsqueezes, concat, reduce, ctx, like, violation):
        removed = [*unsqueezes, concat, reduce]
        out = reduce.outputs[0]
        k = len(xs)
        added: list[gs.Node] = []
        form = f"{'an Add chain' if k > 1 else 'an Identity'}" + \
            (f" times 1/{k}" if reduce.op == "ReduceMean" else "")
        distinct = [x for i, x in enumerate(xs) if all(x is not y for y in xs[:i])]
        record = region_record(self.name, removed, distinct, [out], ctx, like,
                               f"{reduce.op} of a {k}-tensor stack over its new axis as "
                               f"{form} of the {k} tensors", added, "reassociating",
                               rules=[violation], macs_before=0, macs_after=0)
        build = builder(ctx, added)
        if reduce.op == "ReduceMean":
            total = build.sum(xs, "chain", f"{reduce.name}/sum") if k > 1 else xs[0]
            scale = gs.Constant(ctx.fresh(f"{reduce.name}/scale"),
                                np.asarray(1.0 / k, dtype=np.dtype(out.dtype or np.float32)))
            added.append(gs.Node("Mul", ctx.fresh(f"{reduce.name}/mean"), {}, [total, scale],
                                 [out]))
        elif k > 1:
            build.sum(xs, "chain", f"{reduce.name}/sum", out)
        else:
            added.append(gs.Node("Identity", ctx.fresh(f"{reduce.name}/only"), {}, [xs[0]], [out]))
        record.nodes_after = len(added)
        detach(removed)
        ctx.graph.nodes.extend(added)
        return record
