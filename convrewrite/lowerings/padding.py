"""Padding the engine cannot do: an explicit Pad before the conv, and, where the engine pads more
than the conv did (the K210 pads 3x3 by exactly 1), a crop of the extra outputs after it
(``plan.padding``). auto_pad SAME_UPPER / SAME_LOWER are resolved to explicit pads on the way.
Zeros are zeros whoever adds them: exact. An integer conv (QLinearConv, ConvInteger) pads with
its input zero point, its real zero, so the Pad writes that (bit-exact), and the conv keeps its
op and quantization parameters."""

from __future__ import annotations

from ..build.builder import Builder, ConvSite
from ..conv import ConvSpec
from ..decline import Decline
from ..plan.padding import PadPlan, plan_padding, with_explicit_pads
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, missing_ops, register


@register
class ExplicitPadding(Lowering):
    name = "padding"
    fixes = rules_named("max_pad", "symmetric_pad", "same_pad_only")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        found = with_explicit_pads(spec, target, plan_padding)
        if isinstance(found, Decline):
            return found
        plan = found[0]
        pad_in = any(plan.input_pads)
        missing = missing_ops(target, [op for op, used in (("Pad", pad_in), ("Slice", plan.crops))
                                       if used])
        if missing:
            return missing
        how = [f"conv pads {list(plan.conv_pads)}"]
        if pad_in:
            how.append(f"explicit Pad {list(plan.input_pads)}")
        if plan.crops:
            how.append(f"crop from {list(plan.crop_starts)}")
        return Planned(plan, ", ".join(how), "exact", macs_factor=crop_factor(spec, plan))

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        plan, rank, base = planned.detail, site.spec.rank, site.name
        x = b.pad_spatial(site.x, list(plan.input_pads[:rank]), list(plan.input_pads[rank:]),
                          f"{base}/pad", value=site.pad_value)
        y = b.conv(site, site.operands(x), b.fresh(f"{base}/conv"),
                   site.conv_attrs(pads=list(plan.conv_pads)),
                   out=None if plan.crops else site.y)
        if not plan.crops:
            return y
        return b.slice_axes(y, list(range(2, 2 + rank)), list(plan.crop_starts),
                            list(plan.crop_ends), [1] * rank, f"{base}/crop", out=site.y)


def crop_factor(spec: ConvSpec, plan: PadPlan) -> float:
    """MACs spent on outputs the crop throws away, as a factor over the original's (1 where
    nothing is cropped or an extent is not static)."""
    before, size = spec.output_shape, spec.input_shape
    if not plan.crops or before is None or size is None:
        return 1.0
    rank, factor = spec.rank, 1.0
    for d in range(rank):
        n, extent = before[2 + d], size[2 + d]
        if not isinstance(n, int) or not isinstance(extent, int):
            return 1.0
        span = (extent + plan.input_pads[d] + plan.input_pads[d + rank] + plan.conv_pads[d]
                + plan.conv_pads[d + rank] - (spec.kernel_shape[d] - 1) * spec.dilations[d] - 1)
        factor *= (span // spec.strides[d] + 1) / n
    return factor
