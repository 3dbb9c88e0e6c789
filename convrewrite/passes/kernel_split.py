"""Kernels larger than the engine allows: sum of legal sub-kernels over shifted input views.

Larger is measured as the target does: taps (``max_kernel``, ``kernel_shapes``) or the dilated
extent (``max_dilated_kernel_height`` / ``_area``); a sub-kernel keeps the conv's dilation, so
a tile of t taps starts t * dilation rows after the previous one.

The kernel is zero-extended to a multiple of the legal tile (the input gets the matching extra
padding, so every piece sees the same number of outputs), cut into tiles, and each tile becomes a
conv over the padded input starting at the tile's offset. Sums are regrouped: reassociating.

An integer conv is split exactly: its input padded with its zero point (what the conv pads
with), the kernel extended with the weight zero point (so the extra taps add nothing), each tile
an int32 partial sum (``integer_split.integer_partial``: ConvInteger), the partial sums added in
int32 and, for a QLinearConv, the bias added and the total requantized once
(``Builder.requantize``), as the input-channel split does.
"""

from __future__ import annotations

import itertools

import onnx_graphsurgeon as gs

from ..build.onnx_read import conv_inputs, weight_zero_points
from ..conv import INTEGER_CONVS, ConvSpec, dims_text
from ..lowerings.integer_split import integer_partial, plan_requantize
from ..rules import Violation, rules_named
from ..plan.kernel import plan_kernel_split, view_cuts
from ..record import Record
from ..decline import Declined, need
from .protocol import Pass, RewriteContext, register_pass
from .emit import (INT64_MAX, builder, conv_copy, pad_spatial, pad_value, replace, slice_spatial,
                   sum_terms)
from .lower_conv import onnx_site
from .geometry_common import explicit_pads
from .windows import cut_windows


# The report names the cheapest few rejected tiles (a dilated-area frontier has dozens).
SHOWN_ALTERNATIVES = 3


@register_pass
class KernelSplit(Pass):
    name = "kernel_split"
    fixes = rules_named("kernel_shapes", "max_kernel", "max_dilated_kernel_height",
                        "max_dilated_kernel_area")

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
        integer = spec.op_type in INTEGER_CONVS
        requantized = integer_plan(spec, ctx, count) if integer else None
        self.require_ops(ctx, cut_ops + ["Pad"] + (["Add"] if count > 1 else [])
                         + (["Concat"] if whole_extended else []))
        rank, base, y = spec.rank, node.name, node.outputs[0]
        weight = self.weight(node, ctx.opset)
        weight = weight.respaced(plan.padded_kernel, empty=weight_zero_points(node, spec)) \
            if integer else weight.respaced(plan.padded_kernel)
        overflow = [(kp - k) * d for kp, k, d in
                    zip(plan.padded_kernel, spec.kernel_shape, spec.dilations)]
        added: list[gs.Node] = []
        x = pad_spatial(ctx, node.inputs[0], list(pads[:rank]),
                        [e + o for e, o in zip(pads[rank:], overflow)], f"{base}/pad", added,
                        value=pad_value(node))
        site = onnx_site(node, spec, weight) if integer and count > 1 else None
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
            single = count == 1
            if site is not None:        # an int32 partial sum
                attrs = dict(node.attrs, kernel_shape=list(plan.tile), pads=[0] * (2 * rank))
                attrs.pop("auto_pad", None)
                terms.append(integer_partial(builder(ctx, added), site, view, w,
                                             (0, spec.out_channels), stem, attrs))
                continue
            inputs = conv_inputs(node, view, w) if integer else \
                [view, w] + ([node.inputs[2]] if spec.has_bias and not terms else [])
            terms.append(conv_copy(ctx, node, stem, inputs, added, out=y if single else None,
                                   kernel_shape=list(plan.tile), pads=[0] * (2 * rank)))
        if count > 1 and requantized is not None:
            b = builder(ctx, added)
            total = b.sum(terms, ctx.target.rewrite.accumulate, f"{base}/tap_sum")
            b.requantize(total, site, 0, spec.out_channels, f"{base}/requant", out=y)
        elif count > 1:
            sum_terms(ctx, terms, ctx.target.rewrite.accumulate, f"{base}/tap_sum", added, out=y)
        taps = 1
        for t, p in zip(plan.tile, plan.pieces):
            taps *= t * p
        original_taps = 1
        for k in spec.kernel_shape:
            original_taps *= k
        shown = plan.alternatives[:SHOWN_ALTERNATIVES]
        alternatives = "; ".join(f"{dims_text(t)} cost {c}" for t, c in shown) + (
            f"; {len(plan.alternatives) - len(shown)} costlier"
            if len(plan.alternatives) > len(shown) else "")
        how = (f"{count} {dims_text(plan.tile)} sub-kernels "
               f"({dims_text(plan.padded_kernel)} zero-extended, cost {plan.cost}"
               + (f"; rejected {alternatives}" if alternatives else "") + ")"
               + (", views cut by Split and Concat (the target has no Slice)" if cuts else "")
               + (f"; {requantized}" if requantized else "")
               + ("; int32 partial sums (ConvInteger) added" if integer and count > 1
                  and requantized is None else ""))
        record = self.record(node, spec, violations, how, added,
                             tolerance="reassociating" if count > 1 and not integer else "exact",
                             macs_factor=taps / original_taps,
                             params_after=spec.params * taps // original_taps)
        replace(node, ctx, added)
        return record


def integer_plan(spec: ConvSpec, ctx: RewriteContext, count: int) -> str | None:
    """For an integer conv: how its tiles' sum is requantized (a QLinearConv of several tiles),
    or None; declines what cannot be split exactly."""
    if not spec.constant_weight:
        raise Declined(f"a {spec.op_type} weight computed at run time is not cut into taps (its "
                       "zero-extended taps need the weight zero point)")
    if spec.op_type == "QLinearConv" and count > 1:
        return need(plan_requantize(spec, ctx.target, "a kernel split"))
    if not spec.weight_zero_points:     # the kernel is extended with it
        raise Declined(f"a kernel split of a {spec.op_type} extends the kernel with the weight "
                       "zero point; this one is computed in the graph")
    return None

