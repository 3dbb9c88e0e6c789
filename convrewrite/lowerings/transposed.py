"""ConvTranspose as plain convs, wherever a rule it breaks is one the conv lowerings fix (an
engine without ConvTranspose, or with too few strides for it, or a stride, kernel, padding,
rank or map size the engine rejects): the convs it becomes then go on to those lowerings.

Sub-pixel (``plan.transposed``): output phase r (outputs q*s + r) of a stride-s transposed conv
is a stride-1 conv of the *un-upsampled* input with every s-th tap of the flipped kernel; the
s**rank phase convs are interleaved back by DepthToSpace (2-D, equal strides, where the target
runs it); by Concats of each axis's phases on the next axis (the last axis's on the channels) and
one Reshape of that tensor in channels-last order, between two Transposes (any rank and strides,
batch and rank as the conv's own: what Vela 3's batch-1 core runs); or, per axis, by a Reshape of
each phase to [A, L, 1, B] (rows folded into the batch), a Concat on axis 2 and a Reshape back
(nothing above 4-D). ``plan.transposed.choose_interleave`` takes the one with the fewest ops
that the target's ops, rank, batch and extent limits allow. Zero insertion (dilated transposed convs,
kernels smaller than their stride): the input upsampled with zeros the same 4-D way, then one
conv with the flipped kernel: s**rank times the MACs. Sums run in another order: reassociating.
"""

from __future__ import annotations

import math

from ..build.builder import Builder, ConvSite
from ..build.onnx import INT64_MAX
from ..conv import ConvSpec, dims_text
from ..decline import Decline
from ..plan.transposed import TransposedPlan, plan_transposed
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, register


@register
class TransposedToConv(Lowering):
    name = "transposed"
    fixes = rules_named("transposed", "transposed_strides", "transposed_valid_shape",
                        "spatial_ranks", "groups", "max_stride", "max_kernel", "kernel_shapes",
                        "max_dilated_kernel_height", "max_dilated_kernel_area", "max_dilation",
                        "max_pad", "symmetric_pad", "same_pad_only", "input_height",
                        "input_width")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        chosen = plan_transposed(spec, target)
        if isinstance(chosen, Decline):
            return chosen
        plan, others = chosen
        if plan.form == "subpixel":
            how = (f"sub-pixel: {len(plan.subpixel.phases)} phase convs on the input, "
                   f"interleaved" + {"none": "", "depth_to_space": " by DepthToSpace",
                                     "channels_last": " by Concat + one channels-last Reshape",
                                     "reshape": " by Reshape + Concat"}[plan.interleave])
        else:
            how = (f"zero insertion: one conv over the input upsampled by "
                   f"{dims_text(spec.strides)}")
        others = [*others, *plan.interleave_reasons]
        if others:
            how += f" (not {'; not '.join(others)})"
        factor = plan.macs / spec.macs if plan.macs and spec.macs else 1.0
        return Planned(plan, how, "reassociating", macs_factor=factor)

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        plan: TransposedPlan = planned.detail
        weight = site.weight.conv_layout(site.spec.groups)
        if plan.form == "subpixel":
            return _subpixel(b, site, plan, weight)
        return _zero_insertion(b, site, plan, weight)


def _taps(indices: tuple[int, ...], stride: int) -> slice:
    """Kernel indices in descending order, every ``stride``-th, as one slice."""
    stop = indices[-1] - 1
    return slice(indices[0], stop if stop >= 0 else None, -stride)


def _conv_attrs(kernel, pads, groups: int, dilations=None) -> dict:
    rank = len(kernel)
    attrs = {"kernel_shape": list(kernel), "pads": [max(0, q) for q in pads],
             "strides": [1] * rank, "group": groups}
    if dilations is not None:
        attrs["dilations"] = list(dilations)
    return attrs


def _crop_view(b: Builder, x, pads, stem: str):
    """``x`` with the input rows a negative pad drops cut off."""
    rank = len(pads) // 2
    starts = [max(0, -q) for q in pads[:rank]]
    ends = [q if q < 0 else INT64_MAX for q in pads[rank:]]
    if not any(starts) and all(e == INT64_MAX for e in ends):
        return x
    return b.slice_axes(x, list(range(2, 2 + rank)), starts, ends, [1] * rank, stem)


def _subpixel(b: Builder, site: ConvSite, plan: TransposedPlan, weight):
    spec, sub, base = site.spec, plan.subpixel, site.name
    rank = spec.rank
    y_shape = b.shape(site.y) if site.y is not None else None
    whole = [q * s for q, s in zip(sub.phase_length, sub.stride)]
    crop = whole != list(sub.output_length)
    single = len(sub.phases) == 1
    phases = {}
    for phase in sub.phases:
        stem = b.fresh(f"{base}/phase{'.'.join(map(str, phase.offset))}")
        x = _crop_view(b, site.x, phase.pads, f"{stem}/view")
        index = (slice(None), slice(None), *(_taps(t, s) for t, s in zip(phase.taps, sub.stride)))
        inputs = [x, b.weight(weight, index, stem)] + ([site.bias] if site.bias is not None
                                                       else [])
        shape = [y_shape[0], spec.out_channels, *sub.phase_length] if y_shape else None
        out = site.y if single and not crop else None
        phases[phase.offset] = b.conv(site, inputs, stem,
                                      _conv_attrs([len(t) for t in phase.taps], phase.pads,
                                                  spec.groups),
                                      out=out, shape=shape, op_type="Conv")
    final = None if crop else site.y
    if single:
        joined = phases[sub.phases[0].offset]
    elif plan.interleave == "depth_to_space":
        stacked = b.concat([phases[p.offset] for p in sub.phases], 1, f"{base}/phases")
        joined = b.depth_to_space(stacked, sub.stride[0], f"{base}/depth_to_space", out=final)
    elif plan.interleave == "channels_last":
        joined = interleave_channels_last(b, phases, spec.out_channels, list(sub.phase_length),
                                          list(sub.stride), f"{base}/interleave", final)
    else:
        joined = interleave(b, phases, spec.out_channels, list(sub.phase_length),
                            list(sub.stride), f"{base}/interleave", final)
    if crop:
        joined = b.slice_axes(joined, list(range(2, 2 + rank)), [0] * rank,
                              list(sub.output_length), [1] * rank, f"{base}/crop", out=site.y)
    return joined


def _fold(lengths: list, axis: int) -> tuple[list, list]:
    """The reshape that puts spatial ``axis`` second with a unit axis after it, in at most 4-D:
    [N*C*L_<axis, L_axis, 1(, L_>axis)]; and ``lengths`` once that axis has grown."""
    rest = math.prod(lengths[axis + 1:])
    return [-1, lengths[axis], 1] + ([rest] if axis < len(lengths) - 1 else []), rest


def interleave(b: Builder, phases: dict, channels: int, lengths: list, strides: list, stem: str,
               out=None):
    """Phase outputs keyed by offset -> one tensor, outputs ``q * s + r`` on every axis. Per axis,
    last first: each phase is reshaped to [A, L, 1, B], the stride's phases joined on axis 2
    ([A, L, s, B] reads out in interleaved order) and reshaped back with that axis s times
    longer. Every tensor made stays within 4-D."""
    lengths, level = list(lengths), dict(phases)
    rank = len(lengths)
    axes = [d for d in range(rank) if strides[d] > 1]
    for n, d in enumerate(reversed(axes)):
        grown = list(lengths)
        grown[d] *= strides[d]
        folded, _ = _fold(lengths, d)
        last = n == len(axes) - 1
        groups: dict = {}
        for offset, tensor in level.items():
            groups.setdefault(offset[:d] + offset[d + 1:], []).append((offset[d], tensor))
        level = {}
        for key, parts in sorted(groups.items()):
            parts.sort(key=lambda p: p[0])
            tag = ".".join(map(str, key)) or "0"
            pieces = [b.reshape(t, folded, f"{stem}/a{d}.{tag}.fold{r}",
                                f"{stem}/a{d}.{tag}.fold{r}.shape") for r, t in parts]
            joined = b.concat(pieces, 2, f"{stem}/a{d}.{tag}.join")
            level[key[:d] + (0,) + key[d:]] = b.reshape(
                joined, [-1, channels, *grown], f"{stem}/a{d}.{tag}.unfold",
                f"{stem}/a{d}.{tag}.unfold.shape", out=out if last else None)
        lengths = grown
    (result,) = level.values()
    return result


def _join_by_axis(b: Builder, level: dict, d: int, axis: int, stem: str) -> dict:
    """Phase tensors keyed by offset -> the same with spatial axis ``d``'s phases concatenated
    on ``axis`` (offset order), keyed with a 0 for ``d``."""
    groups: dict = {}
    for offset, tensor in level.items():
        groups.setdefault(offset[:d] + offset[d + 1:], []).append((offset[d], tensor))
    joined = {}
    for key, parts in sorted(groups.items()):
        parts.sort(key=lambda p: p[0])
        tag = ".".join(map(str, key)) or "0"
        joined[key[:d] + (0,) + key[d:]] = b.concat([t for _, t in parts], axis,
                                                    f"{stem}/a{d}.{tag}.join")
    return joined


def interleave_channels_last(b: Builder, phases: dict, channels: int, lengths: list,
                             strides: list, stem: str, out=None):
    """Phase outputs keyed by offset -> one tensor, outputs ``q * s + r`` on every axis, every
    tensor at the conv's own rank and batch. Spatial axis d's phases are joined on the axis after
    it (the last axis's on the channels), so in channels-last order the joined tensor
    [N, L0, s0*L1, .., s_last*C] reads out as (l0, r0, l1, r1, .., c): one Reshape to
    [N, s0*L0, .., C] interleaves every axis at once, between a Transpose to channels-last and
    one back. onnx2tf keeps feature maps channels-last, so the first Transpose is no op there and
    the last cancels against the next conv's (Vela's legacy core runs neither layout Transpose)."""
    rank = len(lengths)
    level = dict(phases)
    for d in reversed(range(rank)):
        if strides[d] > 1:
            level = _join_by_axis(b, level, d, 1 if d == rank - 1 else d + 3, stem)
    (joined,) = level.values()
    last = b.transpose(joined, [0, *range(2, rank + 2), 1], f"{stem}/channels_last")
    grown = [q * s for q, s in zip(lengths, strides)]
    flat = b.reshape(last, [-1, *grown, channels], f"{stem}/unfold", f"{stem}/unfold.shape")
    return b.transpose(flat, [0, rank + 1, *range(1, rank + 1)], f"{stem}/channels_first",
                       out=out)


def _zero_insertion(b: Builder, site: ConvSite, plan: TransposedPlan, weight):
    spec, zi, base = site.spec, plan.zero_insertion, site.name
    rank = spec.rank
    x, lengths = site.x, list(spec.input_shape[2:])
    for d in reversed(range(rank)):             # zeros after every element, axis by axis
        s = zi.stride[d]
        if s == 1:
            continue
        folded, _ = _fold(lengths, d)
        stem = f"{base}/upsample{d}"
        x = b.reshape(x, folded, f"{stem}.fold", f"{stem}.fold.shape")
        ends = [s - 1] + ([0] if len(folded) == 4 else [])
        x = b.pad_spatial(x, [0] * len(ends), ends, f"{stem}.zeros")
        lengths[d] *= s
        x = b.reshape(x, [-1, spec.in_channels, *lengths], f"{stem}.unfold",
                      f"{stem}.unfold.shape")
    x = _crop_view(b, x, zi.pads, f"{base}/crop_in")
    stem = b.fresh(f"{base}/conv")
    flipped = (slice(None), slice(None), *(slice(None, None, -1) for _ in range(rank)))
    inputs = [x, b.weight(weight, flipped, stem)] + ([site.bias] if site.bias is not None else [])
    return b.conv(site, inputs, stem, _conv_attrs(spec.kernel_shape, zi.pads, spec.groups,
                                                  spec.dilations),
                  out=site.y, op_type="Conv")
