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

from ..build.builder import Builder, ConvSite
from ..conv import INTEGER_CONVS, ConvSpec, dims_text
from ..decline import Decline
from ..plan.dilation import SpaceToBatchPlan, choose_dilation
from ..plan.padding import with_explicit_pads
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, register


@register
class DilationLowering(Lowering):
    name = "dilation"
    fixes = rules_named("max_dilation")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        found = with_explicit_pads(spec, target, choose_dilation)
        if isinstance(found, Decline):
            return found
        chosen, pads = found
        if chosen.form == "per_tap":
            return Decline(f"the per-tap form is cheaper ({chosen.why}): dilation_taps builds it")
        plan, why = chosen.plan, chosen.why
        if chosen.form == "space_to_batch":
            how = (f"space-to-batch: {plan.phases} sub-images of dilation "
                   f"{dims_text(spec.dilations)} on the batch axis ({why})")
            return Planned((plan, pads), how,
                           "exact" if spec.op_type in INTEGER_CONVS else "reassociating",
                           macs_factor=plan.mac_factor(spec))
        how = (f"{dims_text(spec.kernel_shape)} dilated {dims_text(spec.dilations)} -> dense "
               f"{dims_text(plan.kernel)} with zeros ({why})")
        factor = plan.mac_factor(spec)
        return Planned((plan, pads), how, "exact", macs_factor=factor,
                       params_after=int(spec.params * factor))

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        plan, pads = planned.detail
        if isinstance(plan, SpaceToBatchPlan):
            return _space_to_batch(b, site, plan)
        spec = site.spec
        factors = tuple(d // keep for d, keep in zip(spec.dilations, plan.dilations))
        name = b.fresh(f"{site.name}/dense")
        weight = site.weight.respaced(plan.kernel, factors, empty=b.weight_zero_points(site)) \
            if spec.op_type in INTEGER_CONVS else site.weight.respaced(plan.kernel, factors)
        w = b.weight(weight, (slice(None),), name)
        return b.conv(site, site.operands(site.x, w), name,
                      site.conv_attrs(kernel_shape=list(plan.kernel),
                                      dilations=list(plan.dilations), pads=list(pads)),
                      out=site.y)


def _space_to_batch(b: Builder, site: ConvSite, plan: SpaceToBatchPlan):
    spec, base = site.spec, site.name
    rank = spec.rank
    x = b.pad_spatial(site.x, list(plan.pads[:rank]), list(plan.pads[rank:]), f"{base}/s2b_pad",
                      value=site.pad_value)
    split = [0, 0] + [v for m, r in zip(plan.blocks, plan.rate) for v in (m, r)]
    x = b.reshape(x, split, f"{base}/s2b_split", f"{base}/s2b_split.shape")
    x = b.transpose(x, [0, *(3 + 2 * i for i in range(rank)), 1,
                        *(2 + 2 * i for i in range(rank))], f"{base}/s2b_phases_first")
    x = b.reshape(x, [-1, spec.in_channels, *plan.blocks], f"{base}/s2b_batch",
                  f"{base}/s2b_batch.shape")
    z = b.conv(site, site.operands(x), b.fresh(f"{base}/conv"),
               site.conv_attrs(dilations=list(plan.dilations), pads=[0] * (2 * rank)))
    per_phase = [m - (k - 1) * d for m, k, d in zip(plan.blocks, spec.kernel_shape,
                                                    plan.dilations)]
    z = b.reshape(z, [-1, *plan.rate, spec.out_channels, *per_phase], f"{base}/b2s_unbatch",
                  f"{base}/b2s_unbatch.shape")
    z = b.transpose(z, [0, rank + 1, *(v for i in range(rank) for v in (rank + 2 + i, 1 + i))],
                    f"{base}/b2s_interleave")
    merged = [p * r for p, r in zip(per_phase, plan.rate)]
    crop = merged != list(plan.out_length)
    z = b.reshape(z, [0, spec.out_channels, *merged], f"{base}/b2s_merge",
                  f"{base}/b2s_merge.shape", out=None if crop else site.y)
    if not crop:
        return z
    return b.slice_axes(z, list(range(2, 2 + rank)), [0] * rank, list(plan.out_length),
                        [1] * rank, f"{base}/b2s_crop", out=site.y)
