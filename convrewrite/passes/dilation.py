"""Dilation over the engine's limit, two of the three forms ``plan.dilation.choose_dilation``
weighs (the third, per-tap, is the ``dilation_taps`` lowering), chosen by cost (MACs, plus data
moved for the layout changes; see plan.cost.LAYOUT_ELEMENT_COST_IN_MACS):

- space-to-batch: the input's d**rank interleaved sub-images go to the batch axis, each is
  convolved densely, and the results are interleaved back (Pad, Reshape, Transpose, Slice); no MAC
  touches a zero, but the batch grows d**rank times;
- dense: the holes are written into a larger kernel as zeros (Vela's answer for dilation > 2);
  one conv, but (k-1)*d+1 taps per axis instead of k.
Both compute the same products; space-to-batch may sum them in another order. An integer conv
(QLinearConv, ConvInteger) stays one and is exact in both: the dense kernel's holes hold the
weight zero point, space-to-batch pads with the input zero point.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..build.onnx_read import conv_inputs, weight_zero_points
from ..conv import INTEGER_CONVS, ConvSpec, dims_text
from ..rules import Violation
from ..plan.dilation import choose_dilation
from ..record import Record
from ..decline import Declined, need
from .protocol import Pass, RewriteContext, register_pass
from .emit import conv_copy, int64s, pad_spatial, pad_value, replace, slice_spatial, variable
from .geometry_common import explicit_pads



@register_pass
class DilationLowering(Pass):
    name = "dilation"
    fixes = frozenset({"max_dilation"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        integer = node.op in INTEGER_CONVS
        pads = need(explicit_pads(node, spec))
        chosen = need(choose_dilation(spec, ctx.target, pads))
        if chosen.form == "per_tap":
            raise Declined(f"the per-tap form is cheaper ({chosen.why}): dilation_taps builds it")
        choice = chosen.plan if chosen.form == "space_to_batch" else None
        dense, why = chosen.plan, chosen.why
        weight = self.weight(node)
        added: list[gs.Node] = []
        if choice is not None:
            _space_to_batch(node, spec, choice, ctx, added)
            how = (f"space-to-batch: {choice.phases} sub-images of dilation "
                   f"{dims_text(spec.dilations)} on the batch axis ({why})")
            factor = choice.mac_factor(spec)
            tolerance = "exact" if integer else "reassociating"
        else:
            factors = tuple(d // keep for d, keep in zip(spec.dilations, dense.dilations))
            name = ctx.fresh(f"{node.name}/dense")
            dense_weight = weight.respaced(dense.kernel, factors, empty=weight_zero_points(
                node, spec)) if integer else weight.respaced(dense.kernel, factors)
            w, w_nodes = dense_weight.slice(name, (slice(None),))
            added.extend(w_nodes)
            conv_copy(ctx, node, name, conv_inputs(node, w=w), added,
                      out=node.outputs[0], kernel_shape=list(dense.kernel),
                      dilations=list(dense.dilations), pads=list(pads))
            how = (f"{dims_text(spec.kernel_shape)} dilated "
                   f"{dims_text(spec.dilations)} -> dense "
                   f"{dims_text(dense.kernel)} with zeros ({why})")
            factor, tolerance = dense.mac_factor(spec), "exact"
        record = self.record(node, spec, violations, how, added, tolerance=tolerance,
                             macs_factor=factor,
                             params_after=None if choice is not None
                             else int(spec.params * dense.mac_factor(spec)))
        replace(node, ctx, added)
        return record


def _space_to_batch(node: gs.Node, spec: ConvSpec, plan, ctx: RewriteContext,
                    added: list[gs.Node]) -> None:
    if spec.transposed:
        raise Declined("space-to-batch is for Conv")
    rank, base, y = spec.rank, node.name, node.outputs[0]
    x = pad_spatial(ctx, node.inputs[0], list(plan.pads[:rank]), list(plan.pads[rank:]),
                    f"{base}/s2b_pad", added, value=pad_value(node))

    def op(kind: str, inputs, tag: str, out: gs.Tensor | None = None, **attrs) -> gs.Tensor:
        # of its input's type: the conv's input's before it, its output's after (ConvInteger:
        # uint8 in, int32 out)
        out = out if out is not None else variable(ctx, f"{base}/{tag}.out", inputs[0])
        added.append(gs.Node(kind, ctx.fresh(f"{base}/{tag}"), attrs, inputs, [out]))
        return out

    split = [0, 0] + [v for m, r in zip(plan.blocks, plan.rate) for v in (m, r)]
    x = op("Reshape", [x, int64s(ctx, f"{base}/s2b_split.shape", split)], "s2b_split")
    perm = [0, *(3 + 2 * i for i in range(rank)), 1, *(2 + 2 * i for i in range(rank))]
    x = op("Transpose", [x], "s2b_phases_first", perm=perm)
    x = op("Reshape", [x, int64s(ctx, f"{base}/s2b_batch.shape",
                                 [-1, spec.in_channels, *plan.blocks])], "s2b_batch")
    conv_out = conv_copy(ctx, node, ctx.fresh(f"{base}/conv"), conv_inputs(node, x), added,
                         dilations=list(plan.dilations), pads=[0] * (2 * rank))
    per_phase = [b - (k - 1) * d for b, k, d in zip(plan.blocks, spec.kernel_shape,
                                                    plan.dilations)]
    z = op("Reshape", [conv_out, int64s(ctx, f"{base}/b2s_unbatch.shape",
                                        [-1, *plan.rate, spec.out_channels, *per_phase])],
           "b2s_unbatch")
    perm = [0, rank + 1, *(v for i in range(rank) for v in (rank + 2 + i, 1 + i))]
    z = op("Transpose", [z], "b2s_interleave", perm=perm)
    merged = [p * r for p, r in zip(per_phase, plan.rate)]
    crop = merged != list(plan.out_length)
    z = op("Reshape", [z, int64s(ctx, f"{base}/b2s_merge.shape",
                                 [0, spec.out_channels, *merged])], "b2s_merge",
           out=None if crop else y)
    if crop:
        slice_spatial(ctx, z, [0] * rank, list(plan.out_length), [1] * rank,
                      f"{base}/b2s_crop", added, out=y)
