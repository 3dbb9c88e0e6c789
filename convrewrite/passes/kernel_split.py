"""Kernels larger than the engine allows: sum of legal sub-kernels over shifted input views.

The kernel is zero-extended to a multiple of the legal tile (the input gets the matching extra
padding, so every piece sees the same number of outputs), cut into tiles, and each tile becomes a
conv over the padded input starting at the tile's offset. Sums are regrouped: reassociating.
"""

from __future__ import annotations

import itertools

import onnx_graphsurgeon as gs

from ..conv import ConvSpec, dims_text
from ..rules import Violation
from ..plan.kernel import plan_kernel_split, view_cuts
from ..record import Record
from ..decline import need
from .protocol import Pass, RewriteContext
from .emit import INT64_MAX, builder, conv_copy, pad_spatial, replace, slice_spatial, sum_terms
from .geometry_common import explicit_pads
from .windows import cut_windows


class KernelSplit(Pass):
    name = "kernel_split"
    fixes = frozenset({"kernel_shapes", "max_kernel"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        pads = need(explicit_pads(node, spec))
        plan = need(plan_kernel_split(spec, ctx.target))
        count = 1
        for p in plan.pieces:
            count *= p
        cuts = () if ctx.target.allows_op("Slice") else need(view_cuts(spec, plan, pads))
        cut_ops = [] if count == 1 else ["Slice"] if not cuts else \
            ["Split"] + (["Concat"] if any(c.overlapping for _, c in cuts) else [])
        # a weight computed at run time, zero-extended and taken whole: Concat with zeros
        # (``RuntimeWeight.slice``)
        whole_extended = count == 1 and not spec.constant_weight and \
            tuple(plan.padded_kernel) != tuple(spec.kernel_shape)
        self.require_ops(ctx, cut_ops + ["Pad"] + (["Add"] if count > 1 else [])
                         + (["Concat"] if whole_extended else []))
        rank, base, y = spec.rank, node.name, node.outputs[0]
        weight = self.weight(node, ctx.opset).respaced(plan.padded_kernel)
        overflow = [(kp - k) * d for kp, k, d in
                    zip(plan.padded_kernel, spec.kernel_shape, spec.dilations)]
        added: list[gs.Node] = []
        x = pad_spatial(ctx, node.inputs[0], list(pads[:rank]),
                        [e + o for e, o in zip(pads[rank:], overflow)], f"{base}/pad", added)
        views = None if not cuts else cut_windows(
            builder(ctx, added), x, [2 + a for a, _ in cuts], [c for _, c in cuts],
            lambda depth, prefix: f"{base}/view_split{depth}" + "".join(f".{i}" for i in prefix))
        terms = []
        for index in itertools.product(*(range(p) for p in plan.pieces)):
            tag = ".".join(map(str, index))
            stem = ctx.fresh(f"{base}/tap{tag}")
            starts = [i * t * d for i, t, d in zip(index, plan.tile, spec.dilations)]
            ends = [-((p - 1 - i) * t * d) or INT64_MAX
                    for i, p, t, d in zip(index, plan.pieces, plan.tile, spec.dilations)]
            if views is not None:
                view = views[tuple(index[a] for a, _ in cuts)]
            elif not any(starts) and all(e == INT64_MAX for e in ends):
                view = x
            else:
                view = slice_spatial(ctx, x, starts, ends, [1] * rank, f"{stem}/view", added)
            w_index = (slice(None), slice(None),
                       *(slice(i * t, (i + 1) * t) for i, t in zip(index, plan.tile)))
            w, w_nodes = weight.slice(stem, w_index)
            added.extend(w_nodes)
            inputs = [view, w] + ([node.inputs[2]] if spec.has_bias and not terms else [])
            single = count == 1
            terms.append(conv_copy(ctx, node, stem, inputs, added, out=y if single else None,
                                   kernel_shape=list(plan.tile), pads=[0] * (2 * rank)))
        if count > 1:
            sum_terms(ctx, terms, ctx.target.rewrite.accumulate, f"{base}/tap_sum", added, out=y)
        taps = 1
        for t, p in zip(plan.tile, plan.pieces):
            taps *= t * p
        original_taps = 1
        for k in spec.kernel_shape:
            original_taps *= k
        alternatives = "; ".join(f"{dims_text(t)} cost {c}" for t, c in plan.alternatives)
        how = (f"{count} {dims_text(plan.tile)} sub-kernels "
               f"({dims_text(plan.padded_kernel)} zero-extended, cost {plan.cost}"
               + (f"; rejected {alternatives}" if alternatives else "") + ")"
               + (", views cut by Split and Concat (the target has no Slice)" if cuts else ""))
        record = self.record(node, spec, violations, how, added,
                             tolerance="reassociating" if count > 1 else "exact",
                             macs_factor=taps / original_taps,
                             params_after=spec.params * taps // original_taps)
        replace(node, ctx, added)
        return record
