"""Taps that only ever read zero padding are dropped before any geometry lowering
(``plan.dead_taps``).

Segmentation nets run dilated convs on small maps (DeepLab's ASPP: rates 12/24/36 on 8x8 at low
resolution), where most taps fall in the padding for every output. Lowering those taps as written
would build 73x73 dense kernels; dropping them is exact and usually leaves a 1x1 or 3x3 conv."""

from __future__ import annotations

from dataclasses import replace
from math import prod

from ..build.builder import Builder, ConvSite
from ..conv import ConvSpec, dims_text
from ..decline import Decline
from ..legality import check
from ..plan.dead_taps import TrimPlan, plan_dead_taps
from ..plan.padding import explicit_pads
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, register


@register
class DeadTaps(Lowering):
    name = "dead_taps"
    fixes = rules_named("max_dilation", "kernel_shapes", "max_kernel", "max_pad",
                        "max_dilated_kernel_height", "max_dilated_kernel_area", "same_pad_only",
                        "symmetric_pad")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        if spec.op_type != "Conv":
            return Decline(f"{spec.op_type} taps are not trimmed")
        pads = explicit_pads(spec)
        if isinstance(pads, Decline):
            return pads
        plan = plan_dead_taps(spec, pads)
        if isinstance(plan, Decline):
            return plan
        kept, total = prod(plan.kernel), prod(spec.kernel_shape)
        how = (f"{dims_text(spec.kernel_shape)} -> {dims_text(plan.kernel)}: "
               f"taps that only read padding dropped")
        return Planned(plan, how, "exact", macs_factor=kept / total,
                       params_after=spec.params * kept // total)

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        plan, spec = planned.detail, site.spec
        stem = b.fresh(f"{site.name}/trimmed")
        w = b.weight(site.weight, (slice(None), slice(None),
                                   *(slice(a, b + 1) for a, b in plan.taps)), stem)
        attrs = dict(site.attrs, kernel_shape=list(plan.kernel), pads=list(plan.pads),
                     dilations=list(_trimmed_dilations(spec, plan)))
        attrs.pop("auto_pad", None)
        inputs = [site.x, w] + ([site.bias] if site.bias is not None else [])
        return b.conv(site, inputs, stem, attrs, out=site.y)


def _trimmed_dilations(spec: ConvSpec, plan: TrimPlan) -> tuple[int, ...]:
    return tuple(d if k > 1 else 1 for d, k in zip(spec.dilations, plan.kernel))


def trims_first(spec: ConvSpec, target: Target, broken: set[str]) -> bool:
    """Whether the conv is trimmed before any other lowering: where the trimmed conv breaks no rule
    the conv did not already break (``broken``): exact, and every dropped tap is MACs saved on
    any engine and in every lowering after it (DeepLab's ASPP at 8x8: 9x fewer; Vela costs the
    untrimmed dilated kernels as if their taps were real work; a 5x5 depthwise conv on a 2x2 map
    is a 3x3 before the group lowering makes dense chunks of it). Not where nothing is dropped
    or the trimmed conv would break a new rule (e.g. pads the engine does not take)."""
    planned = DeadTaps().plan(spec, target)
    if isinstance(planned, Decline):
        return False
    plan = planned.detail
    after = replace(spec, kernel_shape=plan.kernel, pads=plan.pads, auto_pad="NOTSET",
                    dilations=_trimmed_dilations(spec, plan))
    return {v.rule for v in check(after, target)} <= broken
