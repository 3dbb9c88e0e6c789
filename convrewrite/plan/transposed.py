"""ConvTranspose as plain convs: the sub-pixel phases, or zero insertion.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..conv import ConvSpec
from ..decline import Decline


@dataclass(frozen=True)
class Phase:
    """One output phase of a transposed conv: outputs ``q * stride + offset`` per axis."""

    offset: tuple[int, ...]
    taps: tuple[tuple[int, ...], ...]   # per axis: kernel indices used, in correlation order
    pads: tuple[int, ...]               # conv pads (begins, ends); negative means crop the input


@dataclass(frozen=True)
class SubPixelPlan:
    stride: tuple[int, ...]
    phase_length: tuple[int, ...]       # outputs per phase and axis (all phases alike)
    output_length: tuple[int, ...]      # the transposed conv's output extent
    phases: tuple[Phase, ...]           # in depth-to-space order (last axis fastest)


def plan_subpixel(spec: ConvSpec, pads: tuple[int, ...]) -> SubPixelPlan | Decline:
    """ConvTranspose as stride**rank small convs on the input itself, one per output phase,
    interleaved: out[q*s + r] = sum_j x[q + a - j] * W[rho + j*s] with r + p = a*s + rho.
    Nothing is multiplied by an inserted zero."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("the sub-pixel form needs a static input size")
    if any(d != 1 for d in spec.dilations):
        return Decline("the sub-pixel form does not take dilated transposed convs yet")
    rank = spec.rank
    if rank > 2:
        return Decline("the sub-pixel form handles 1-D and 2-D transposed convs")
    if rank == 2 and spec.strides[0] != spec.strides[1]:
        return Decline("the sub-pixel form interleaves with DepthToSpace, which needs equal strides")
    lengths, per_axis = [], []
    for d in range(rank):
        size, k, s = spec.input_shape[2 + d], spec.kernel_shape[d], spec.strides[d]
        begin, end = pads[d], pads[d + rank]
        extra = spec.output_padding[d] if spec.output_padding else 0
        out_len = (size - 1) * s + k - begin - end + extra
        q_len = -(-out_len // s)
        lengths.append(out_len)
        options = []
        for r in range(s):
            a, rho = divmod(r + begin, s)
            taps = tuple(range(rho, k, s))[::-1]
            j = len(taps)
            pad_begin = j - 1 - a
            pad_end = q_len - 1 + j - size - pad_begin
            options.append((r, taps, pad_begin, pad_end))
        per_axis.append((q_len, options))
    phases = []
    for combo in itertools.product(*(opts for _, opts in per_axis)):
        phases.append(Phase(offset=tuple(c[0] for c in combo),
                            taps=tuple(c[1] for c in combo),
                            pads=tuple(c[2] for c in combo) + tuple(c[3] for c in combo)))
    return SubPixelPlan(tuple(spec.strides), tuple(q for q, _ in per_axis), tuple(lengths),
                        tuple(phases))


@dataclass(frozen=True)
class ZeroInsertionPlan:
    stride: tuple[int, ...]
    pads: tuple[int, ...]              # conv pads over the upsampled input; negative: crop it


def plan_zero_insertion(spec: ConvSpec, pads: tuple[int, ...]) -> ZeroInsertionPlan | Decline:
    """ConvTranspose as a stride-1 conv of the input with stride-1 zeros inserted after every
    element (the upsampled input has L*s entries: s-1 trailing zeros count as end padding),
    with the flipped kernel. Works for any rank, stride and dilation; costs s**rank more MACs
    than the sub-pixel form."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("zero insertion needs a static input size")
    rank = spec.rank
    begins, ends = [], []
    for d in range(rank):
        span = spec.dilations[d] * (spec.kernel_shape[d] - 1)
        extra = spec.output_padding[d] if spec.output_padding else 0
        begins.append(span - pads[d])
        ends.append(span - pads[d + rank] + extra - (spec.strides[d] - 1))
    return ZeroInsertionPlan(tuple(spec.strides), tuple(begins + ends))
