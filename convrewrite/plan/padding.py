"""Padding the engine cannot do: what the conv keeps, what an explicit Pad adds, what is cropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..conv import INTEGER_CONVS, ConvSpec, effective_pads
from ..decline import Decline
from ..target import Target


@dataclass(frozen=True)
class PadPlan:
    conv_pads: tuple[int, ...]         # begins then ends, what the conv keeps
    input_pads: tuple[int, ...]        # zeros added by an explicit Pad first
    crop_starts: tuple[int, ...]       # outputs to drop at the start of each spatial axis
    crop_ends: tuple[int, ...]         # Slice ends: NO_END, -k (drop k), or an absolute index

    @property
    def crops(self) -> bool:
        return any(self.crop_starts) or any(e != NO_END for e in self.crop_ends)


NO_END = 2**63 - 1


def explicit_pads(spec: ConvSpec) -> tuple[int, ...] | Decline:
    """A Conv's (or an integer conv's) begin/end pads (auto_pad resolved), or why they are not
    known (SAME_* on a dynamic input): what the geometry lowerings start from. An integer conv
    pads with its input zero point (the real zero), so the lowerings pad it with that
    (``OnnxBuilder.pad_spatial``'s ``value``)."""
    if spec.op_type != "Conv" and spec.op_type not in INTEGER_CONVS:
        return Decline(f"{spec.op_type} is not lowered by this pass yet (only Conv, QLinearConv "
                       "and ConvInteger)")
    pads = effective_pads(spec)
    if pads is None:
        return Decline(f"auto_pad {spec.auto_pad} needs a static input size to resolve")
    return pads


def with_explicit_pads(spec: ConvSpec, target: Target, choose):
    """``(choose(spec, target, pads), pads)`` with the conv's explicit pads, or the Decline of
    either: how a geometry lowering that keeps the conv's padding starts its plan."""
    pads = explicit_pads(spec)
    if isinstance(pads, Decline):
        return pads
    chosen = choose(spec, target, pads)
    return chosen if isinstance(chosen, Decline) else (chosen, pads)


def plan_padding(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> PadPlan | Decline:
    """Move padding the engine cannot do into an explicit Pad; where the engine insists on more
    padding than the conv has ("same" padding only), pad as it wants and crop the extra outputs.
    With a stride, a few more zeros in front keep the kept outputs on the original grid."""
    rules, rank = target.conv, spec.rank
    conv_pads, extra_in = [0] * (2 * rank), [0] * (2 * rank)
    crop_starts, crop_ends = [0] * rank, [NO_END] * rank
    for d in range(rank):
        begin, end, stride = pads[d], pads[d + rank], spec.strides[d]
        if rules.same_pad_only:
            span = spec.dilated_kernel[d]
            if span % 2 == 0:
                return Decline(f"the engine pads (k-1)/2 on each side; kernel extent {span} is even")
            want = (span - 1) // 2
            if rules.max_pad is not None and want > rules.max_pad:
                return Decline(f"same padding {want} for this kernel exceeds max_pad {rules.max_pad}")
            keep_begin = keep_end = want
        else:
            cap = rules.max_pad if rules.max_pad is not None else max(begin, end)
            keep_begin, keep_end = min(begin, cap), min(end, cap)
            if rules.symmetric_pad:
                keep_begin = keep_end = min(keep_begin, keep_end)
        conv_pads[d], conv_pads[d + rank] = keep_begin, keep_end
        if keep_begin <= begin:
            extra_in[d] = begin - keep_begin
        else:                                  # the engine pads more: align, then drop outputs
            extra_in[d] = (begin - keep_begin) % stride
            crop_starts[d] = (keep_begin + extra_in[d] - begin) // stride
        if keep_end <= end:
            extra_in[d + rank] = end - keep_end
        elif stride == 1:
            crop_ends[d] = -(keep_end - end)
        else:
            length = spec.output_shape[2 + d] if spec.output_shape else None
            if length is None:
                return Decline("cropping a strided conv's extra outputs needs a static output size")
            crop_ends[d] = crop_starts[d] + length
    return PadPlan(tuple(conv_pads), tuple(extra_in), tuple(crop_starts), tuple(crop_ends))
