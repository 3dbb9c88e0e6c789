"""A ConvTranspose whose uncropped output is not what TFLite's TRANSPOSE_CONV makes.

Vela runs a TRANSPOSE_CONV only when its output is input*stride + max(kernel - stride, 0) (VALID;
onnx2tf then crops the ONNX pads with a STRIDED_SLICE). ONNX's uncropped output is
stride*(input - 1) + kernel + output_padding, so only output_padding = max(stride - kernel, 0)
fits. Moving the difference into the end pads changes nothing that is kept: rows that
output_padding adds past the last kernel tap hold only the bias, and a crop that reaches into them
can be cropped one row less. Where the output keeps such bias-only rows (end pad smaller than the
surplus), the conv runs without them and bias, then a zero Pad and the bias Add restore them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..build.builder import Builder, ConvSite
from ..conv import ConvSpec
from ..decline import Decline
from ..rules import rules_named, valid_output_padding
from ..target import Target
from .contract import Lowering, Planned, missing_ops, register


@dataclass(frozen=True)
class ShapePlan:
    pads: tuple[int, ...]               # the ConvTranspose's new pads (begins, then ends)
    output_padding: tuple[int, ...]     # TRANSPOSE_CONV's
    grow: tuple[int, ...]               # bias-only rows restored after it, per axis (end side)


def plan_valid_shape(spec: ConvSpec) -> "ShapePlan | Decline":
    """The pads and output_padding that give the same kept outputs as TRANSPOSE_CONV's shape."""
    if not spec.transposed:
        return Decline(f"{spec.op_type} is not a transposed conv")
    if spec.auto_pad not in ("NOTSET", "", "VALID") or spec.output_size is not None:
        return Decline("output_shape / auto_pad SAME are resolved by the transposed lowering")
    rank = spec.rank
    pads = tuple(spec.pads or (0,) * (2 * rank)) if spec.auto_pad in ("NOTSET", "") \
        else (0,) * (2 * rank)
    have = tuple(spec.output_padding or (0,) * rank)
    want = valid_output_padding(spec)
    ends = [pads[rank + i] + want[i] - have[i] for i in range(rank)]
    return ShapePlan((*pads[:rank], *(max(0, e) for e in ends)), want,
                     tuple(max(0, -e) for e in ends))


@register
class TransposedShape(Lowering):
    name = "transposed_shape"
    fixes = rules_named("transposed_valid_shape")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        plan = plan_valid_shape(spec)
        if isinstance(plan, Decline):
            return plan
        if not any(plan.grow):
            return Planned(plan, f"pads {list(plan.pads)}, output_padding "
                                 f"{list(plan.output_padding)} (the same outputs)", "exact")
        bias_ops = ["Add"] + ([] if spec.constant_bias else ["Reshape"]) if spec.has_bias else []
        missing = missing_ops(target, ["Pad", *bias_ops])
        if missing:
            return missing
        return Planned(plan, f"output_padding {list(plan.output_padding)}, then "
                             f"{list(plan.grow)} bias-only rows by Pad"
                             + (" + bias Add" if spec.has_bias else ""), "reassociating")

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        plan, rank, base = planned.detail, site.spec.rank, site.name
        attrs = {k: v for k, v in site.attrs.items() if k != "auto_pad"}
        attrs.update(pads=list(plan.pads), output_padding=list(plan.output_padding))
        if not any(plan.grow):
            return b.conv(site, site.operands(site.x), b.fresh(f"{base}/conv"), attrs,
                          out=site.y)
        biased = site.bias is not None
        unbiased = b.conv(site, [site.x, site.weight_operand], b.fresh(f"{base}/conv"), attrs)
        padded = b.pad_spatial(unbiased, [0] * rank, list(plan.grow), f"{base}/bias_rows",
                               out=None if biased else site.y)
        if not biased:
            return padded
        return b.add(padded, b.bias_column(site, f"{base}/bias"), b.fresh(f"{base}/bias"),
                     out=site.y)
