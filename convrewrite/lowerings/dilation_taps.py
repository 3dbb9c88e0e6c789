"""Per-tap dilation: a dilated conv whose dilation the engine cannot run, where this form is the
cheapest of the three ``plan.dilation.choose_dilation`` weighs (dense kernel and space-to-batch
are the ``dilation`` pass's), becomes one 1x1 conv per kernel tap over the view of the padded
input that tap reads (a Slice whose step is the conv's stride), the partial outputs summed (bias
on the first). MACs x1, no kernel grows and no batch either, so it fits where the dense kernel is
too big and space-to-batch too wide (DeepLabV3's ASPP at 640x640). Sums regrouped:
reassociating. An integer conv is exact: the input padded with its zero point, each tap an int32
partial sum (``integer_split.integer_partial``), a QLinearConv's sum requantized once."""

from __future__ import annotations

from dataclasses import dataclass

from ..build.builder import Builder, ConvSite
from ..conv import INTEGER_CONVS, ConvSpec, dims_text, effective_pads
from ..decline import Decline
from ..plan.dilation import PerTapPlan, choose_dilation
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, register
from .integer_split import integer_partial, plan_requantize


@dataclass(frozen=True)
class PerTapEmit:
    plan: PerTapPlan
    accumulate: str                 # the target's sum order: chain or tree


@register
class DilationTaps(Lowering):
    name = "dilation_taps"
    fixes = rules_named("max_dilation")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        if spec.op_type not in ("Conv", *INTEGER_CONVS):
            return Decline(f"{spec.op_type} taps are not split here")
        pads = effective_pads(spec)
        if pads is None:
            return Decline(f"auto_pad {spec.auto_pad} needs a static input size to resolve")
        chosen = choose_dilation(spec, target, pads)
        if isinstance(chosen, Decline):
            return chosen
        if chosen.form != "per_tap":
            return Decline(f"the {chosen.form.replace('_', '-')} form is cheaper ({chosen.why})")
        plan = chosen.plan
        how = (f"per-tap: {len(plan.taps)} 1x1 convs over shifted views of the padded input "
               f"(dilation {dims_text(spec.dilations)}), summed ({chosen.why})")
        if spec.op_type == "QLinearConv" and len(plan.taps) > 1:
            requantized = plan_requantize(spec, target, "a per-tap split")
            if isinstance(requantized, Decline):
                return requantized
            how += f"; {requantized}"
        elif spec.op_type == "ConvInteger":
            how += "; int32 partial sums"
        tolerance = "exact" if spec.op_type in INTEGER_CONVS else "reassociating"
        return Planned(PerTapEmit(plan, target.rewrite.accumulate), how, tolerance)

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        plan, spec, base = planned.detail.plan, site.spec, site.name
        rank = spec.rank
        x = b.pad_spatial(site.x, list(plan.pads[:rank]), list(plan.pads[rank:]),
                          f"{base}/taps_pad", value=site.pad_value)
        op, single = spec.op_type, len(plan.taps) == 1
        partial = op == "ConvInteger" or op == "QLinearConv" and not single
        y_shape = b.shape(site.y) if site.y is not None else None
        terms = []
        for n, (tap, start) in enumerate(zip(plan.taps, plan.starts)):
            tag = ".".join(map(str, tap))
            stem = b.fresh(f"{base}/tap{tag}")
            view = b.slice_axes(x, list(range(2, 2 + rank)), list(start),
                                plan.ends(spec, start), list(spec.strides), f"{stem}/view")
            w = b.weight(site.weight, (slice(None), slice(None),
                                       *(slice(t, t + 1) for t in tap)), stem)
            attrs = {"kernel_shape": [1] * rank, "strides": [1] * rank, "pads": [0] * (2 * rank),
                     "dilations": [1] * rank, "group": spec.groups}
            shape = [y_shape[0], spec.out_channels, *plan.out_length] if y_shape else None
            if partial:                 # an int32 partial sum
                terms.append(integer_partial(b, site, view, w, (0, spec.out_channels), stem,
                                             attrs, shape=shape,
                                             out=site.y if single else None))
                continue
            inputs = site.operands(view, w) if op == "QLinearConv" else \
                [view, w] + ([site.bias] if site.bias is not None and n == 0 else [])
            terms.append(b.conv(site, inputs, stem, attrs, out=site.y if single else None,
                                shape=shape))
        if op == "QLinearConv" and not single:
            total = b.sum(terms, planned.detail.accumulate, f"{base}/taps_sum")
            return b.requantize(total, site, 0, spec.out_channels, f"{base}/requant",
                                out=site.y)
        return b.sum(terms, planned.detail.accumulate, f"{base}/taps_sum", out=site.y)
