"""Stride over the engine's limit, two ways, chosen by cost (``plan.stride.choose_stride``):

- subsample: run the conv at a legal stride and keep every s-th output (nncase's K210 path); a
  1x1 kernel without padding subsamples its input instead and wastes nothing. Exact; an integer
  conv (QLinearConv, ConvInteger) stays one, since slicing a quantized tensor is exact.
- space-to-depth: fold the stride into channels (SpaceToDepth, then a stride-1 conv with
  ceil(k/s) taps over s*s times the channels, weights rearranged to match). Fewer MACs for
  k > 1, one pass over the input. Products are summed in another order: reassociating (for an
  integer conv exact: its input padded with the zero point, its kernel extended with the
  weight's, the conv the same op).
"""

from __future__ import annotations

from ..build.builder import Builder, ConvSite
from ..build.onnx_read import INT64_MAX
from ..conv import INTEGER_CONVS, ConvSpec, dims_text
from ..decline import Decline, Declined
from ..plan.padding import with_explicit_pads
from ..plan.stride import StrideChoice, choose_stride
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, register


@register
class StrideSubsample(Lowering):
    name = "stride"
    fixes = rules_named("max_stride")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        found = with_explicit_pads(spec, target, choose_stride)
        if isinstance(found, Decline):
            return found
        chosen, pads = found
        integer = spec.op_type in INTEGER_CONVS
        if chosen.folded is not None:
            f = chosen.folded
            how = (f"space-to-depth {f.block}: {f.kernel[0]}x{f.kernel[1]} conv over "
                   f"{f.block * f.block}x the channels (cost x{f.cost:.2f} vs subsampling "
                   f"x{f.subsample_cost:.2f})")
            factor = f.block * f.block * f.kernel[0] * f.kernel[1] / (
                spec.kernel_shape[0] * spec.kernel_shape[1])
            return Planned((chosen, pads), how, "exact" if integer else "reassociating",
                           macs_factor=factor)
        plan = chosen.subsample
        how = [f"conv at stride {dims_text(plan.conv_strides)}"]
        if any(s > 1 for s in plan.input_steps):
            how.append(f"input subsampled by {dims_text(plan.input_steps)}")
        if any(s > 1 for s in plan.output_steps):
            how.append(f"output subsampled by {dims_text(plan.output_steps)}")
        if chosen.not_chosen:
            how.append(chosen.not_chosen)
        return Planned((chosen, pads), ", ".join(how), "exact", macs_factor=plan.mac_factor)

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        chosen, pads = planned.detail
        if chosen.folded is not None:
            return _space_to_depth(b, site, chosen)
        plan, rank, base = chosen.subsample, site.spec.rank, site.name
        axes = list(range(2, 2 + rank))
        subsample_in = any(s > 1 for s in plan.input_steps)
        subsample_out = any(s > 1 for s in plan.output_steps)
        x = site.x
        if subsample_in:
            x = b.slice_axes(x, axes, [0] * rank, [INT64_MAX] * rank, list(plan.input_steps),
                             f"{base}/subsample_in")
        y = b.conv(site, site.operands(x), b.fresh(f"{base}/conv"),
                   site.conv_attrs(strides=list(plan.conv_strides), pads=list(pads)),
                   out=None if subsample_out else site.y)
        if not subsample_out:
            return y
        return b.slice_axes(y, axes, [0] * rank, [INT64_MAX] * rank, list(plan.output_steps),
                            f"{base}/subsample_out", out=site.y)


def _space_to_depth(b: Builder, site: ConvSite, chosen: StrideChoice):
    plan, spec, base = chosen.folded, site.spec, site.name
    s, (kh, kw) = plan.block, plan.kernel
    x = site.x
    if any(e < 0 for e in plan.pads[2:]):
        x = b.slice_axes(x, [2, 3], [0, 0], [e if e < 0 else INT64_MAX for e in plan.pads[2:]],
                         [1, 1], f"{base}/s2d_crop")
    x = b.pad_spatial(x, list(plan.pads[:2]), [max(0, e) for e in plan.pads[2:]],
                      f"{base}/s2d_pad", value=site.pad_value)
    folded = b.space_to_depth(x, s, f"{base}/space_to_depth")
    weight = site.weight.respaced((kh * s, kw * s), empty=b.weight_zero_points(site)) \
        if spec.op_type in INTEGER_CONVS else site.weight.respaced((kh * s, kw * s))
    cout, cin = weight.values.shape[:2]
    taps = weight.values.reshape(cout, cin, kh, s, kw, s).transpose(0, 3, 5, 1, 2, 4)
    try:
        weight = weight.with_values(taps.reshape(cout, s * s * cin, kh, kw))
    except ValueError as exc:
        raise Declined(str(exc)) from None
    stem = b.fresh(f"{base}/conv")
    w = b.weight(weight, (slice(None),), stem)
    return b.conv(site, site.operands(folded, w), stem,
                  site.conv_attrs(kernel_shape=[kh, kw], strides=[1, 1], pads=[0, 0, 0, 0]),
                  out=site.y)
