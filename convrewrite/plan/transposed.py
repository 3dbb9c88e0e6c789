"""ConvTranspose as plain convs: the sub-pixel phases, or zero insertion, chosen by MACs, with
every tensor the form emits kept within the target's rank and ops (``plan_transposed``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import prod

from ..conv import ConvSpec
from ..decline import Decline
from ..target import Target
from ..weights import runtime_conv_layout_ops
from .limits import missing_ops


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


def transposed_pads(spec: ConvSpec) -> tuple[int, ...] | Decline:
    """Explicit begin/end pads of a ConvTranspose, resolving ``output_shape`` and auto_pad as
    the ONNX spec does: the total padding is halved, the odd pixel at the end for SAME_UPPER
    and at the start otherwise."""
    rank = spec.rank
    if spec.output_size is None and spec.auto_pad in ("NOTSET", ""):
        return spec.pads or (0,) * (2 * rank)
    if spec.output_size is None and spec.auto_pad == "VALID":
        return (0,) * (2 * rank)
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("output_shape / auto_pad of a ConvTranspose need a static input size")
    sizes = spec.input_shape[2:]
    wanted = list(spec.output_size) if spec.output_size is not None else \
        [n * s for n, s in zip(sizes, spec.strides)]
    extra = spec.output_padding or (0,) * rank
    begins, ends = [], []
    for n, s, span, e, want in zip(sizes, spec.strides, spec.dilated_kernel, extra, wanted):
        total = s * (n - 1) + e + span - want
        half = total // 2
        if spec.auto_pad == "SAME_UPPER":
            begins.append(half)
            ends.append(total - half)
        else:
            begins.append(total - half)
            ends.append(half)
    return tuple(begins + ends)


@dataclass(frozen=True)
class TransposedPlan:
    """How a ConvTranspose becomes plain convs."""

    form: str                                   # "subpixel" | "zero_insertion"
    pads: tuple[int, ...]                       # its resolved begin/end pads
    # subpixel: "none" | "depth_to_space" | "channels_last" | "reshape" (``choose_interleave``)
    interleave: str
    subpixel: SubPixelPlan | None = None
    zero_insertion: ZeroInsertionPlan | None = None
    macs: int | None = None
    interleave_reasons: tuple[str, ...] = ()    # why each other interleave was not taken


def subpixel_macs(spec: ConvSpec, plan: SubPixelPlan) -> int:
    batch = spec.input_shape[0] or 1
    return sum(spec.out_channels * spec.in_per_group * prod(len(t) for t in phase.taps)
               * prod(plan.phase_length) for phase in plan.phases) * batch


def zero_insertion_macs(spec: ConvSpec, pads: tuple[int, ...]) -> int | None:
    """Every output position reads the whole kernel over the upsampled input."""
    if spec.input_shape is None or None in spec.input_shape[2:]:
        return None
    rank, extra = spec.rank, spec.output_padding or (0,) * spec.rank
    outs = [s * (n - 1) + e + span - pads[d] - pads[d + rank]
            for d, (n, s, span, e) in enumerate(zip(spec.input_shape[2:], spec.strides,
                                                     spec.dilated_kernel, extra))]
    return (spec.input_shape[0] or 1) * spec.out_channels * spec.in_per_group \
        * prod(spec.kernel_shape) * prod(outs)


INTERLEAVE_OPS = {"none": [], "depth_to_space": ["Concat", "DepthToSpace"],
                  "channels_last": ["Concat", "Transpose", "Reshape"],
                  "reshape": ["Reshape", "Concat"]}
INTERLEAVE_NAMES = {"depth_to_space": "DepthToSpace", "channels_last": "a channels-last Reshape",
                    "reshape": "Reshape + Concat with rows folded into the batch"}


def interleave_ops(interleave: str) -> list[str]:
    return INTERLEAVE_OPS[interleave]


def _joined_axes(strides) -> list[int]:
    """The spatial axes an interleave joins phases on, last first (the order it joins them)."""
    return [d for d in reversed(range(len(strides))) if strides[d] > 1]


def interleave_shapes(interleave: str, batch: int, channels: int, plan: SubPixelPlan
                      ) -> list[list[int]]:
    """The shapes of the tensors an interleave joins or moves (what the target's tensor limits
    are checked on); the phases themselves are the phase convs' outputs."""
    lengths, strides = list(plan.phase_length), list(plan.stride)
    grown = [q * s for q, s in zip(lengths, strides)]
    if interleave == "depth_to_space":
        return [[batch, channels * strides[0] * strides[1], *lengths], [batch, channels, *grown]]
    if interleave == "channels_last":
        joined = [batch, strides[-1] * channels, lengths[0],
                  *(s * q for s, q in zip(strides[:-1], lengths[1:]))]
        return [joined, [batch, *grown, channels]]
    shapes = []
    for d in _joined_axes(strides):                 # [N*C*L_<d, L_d, s_d(, L_>d)]
        rest = prod(lengths[d + 1:])
        shapes.append([batch * channels * prod(lengths[:d]), lengths[d], strides[d]]
                      + ([rest] if d < len(lengths) - 1 else []))
        lengths[d] *= strides[d]
    return shapes


def interleave_node_count(interleave: str, strides) -> int:
    """How many ops an interleave emits: the one data-movement cost the forms differ in (their
    phase convs are the same MACs)."""
    if interleave == "none":
        return 0
    if interleave == "depth_to_space":
        return 2
    groups = {d: prod(strides[:d]) for d in _joined_axes(strides)}   # joins per axis
    if interleave == "channels_last":
        return sum(groups.values()) + 3             # the joins, to channels-last, Reshape, back
    return sum(g * (strides[d] + 2) for d, g in groups.items())   # folds, join, unfold


def interleave_rank(interleave: str, spec: ConvSpec, plan: SubPixelPlan) -> int:
    batch = spec.input_shape[0] or 1
    return max(len(shape) for shape in interleave_shapes(interleave, batch, spec.out_channels,
                                                         plan))


def interleave_breaks(interleave: str, spec: ConvSpec, plan: SubPixelPlan,
                      target: Target) -> str | None:
    """Which of the target's batch and extent limits the interleave's own tensors break, or
    None. A batch or extent the model's own tensors already have is not the form's doing."""
    batch = spec.input_shape[0] or 1
    for shape in interleave_shapes(interleave, batch, spec.out_channels, plan):
        limit = target.max_tensor_batch
        if limit is not None and len(shape) >= 4 and shape[0] > max(limit, batch):
            return (f"it reads batch {shape[0]} (rows folded into the batch; max_tensor_batch "
                    f"{limit})")
        limit = target.max_tensor_dim
        if limit is not None and max(shape) > limit:
            return f"a {max(shape)}-long axis (max_tensor_dim {limit})"
    return None


def choose_interleave(spec: ConvSpec, target: Target, plan: SubPixelPlan
                      ) -> tuple[str, list[str]] | Decline:
    """The interleave with the fewest ops among those the target runs (its ops, its tensor rank)
    whose tensors keep to its batch and extent limits (if none does, among those it runs: the
    legality check then names what is left),
    and why each other was not taken. DepthToSpace takes 2-D equal strides only; the
    channels-last form joins each axis's phases on the next axis (channels for the last) and
    makes the whole tensor one channels-last Reshape, at the conv's own rank; the batch form
    reshapes every phase to at most 4-D with rows folded into the batch."""
    if all(s == 1 for s in plan.stride):
        return "none", []
    candidates = ["channels_last", "reshape"]
    if spec.rank == 2 and plan.stride[0] == plan.stride[1]:
        candidates.insert(0, "depth_to_space")
    runs, within, reasons = [], [], []
    for name in candidates:
        missing = missing_ops(target, INTERLEAVE_OPS[name])
        rank = interleave_rank(name, spec, plan)
        if not missing and target.max_tensor_rank is not None and rank > target.max_tensor_rank:
            missing = Decline(f"its {rank}-D tensors (max_tensor_rank {target.max_tensor_rank})")
        breaks = None if missing else interleave_breaks(name, spec, plan, target)
        if missing or breaks:
            reasons.append(f"interleave by {INTERLEAVE_NAMES[name]}: "
                           f"{missing.reason if missing else breaks}")
        if not missing:
            runs.append(name)
            if not breaks:
                within.append(name)
    if not runs:
        return Decline("; ".join(reasons))
    pool = within or runs
    best = min(pool, key=lambda n: interleave_node_count(n, plan.stride))
    reasons += [f"interleave by {INTERLEAVE_NAMES[n]}: {interleave_node_count(n, plan.stride)} "
                f"ops, not {interleave_node_count(best, plan.stride)}" for n in pool if n != best]
    return best, reasons


def _subpixel_form(spec: ConvSpec, target: Target, pads) -> TransposedPlan | Decline:
    plan = plan_subpixel(spec, pads)
    if isinstance(plan, Decline):
        return plan
    if any(not taps for phase in plan.phases for taps in phase.taps):
        return Decline("a kernel smaller than its stride leaves output phases without taps")
    chosen = choose_interleave(spec, target, plan)
    if isinstance(chosen, Decline):
        return chosen
    interleave, not_taken = chosen
    crops = any(q < 0 for phase in plan.phases for q in phase.pads) or \
        [q * s for q, s in zip(plan.phase_length, plan.stride)] != list(plan.output_length)
    missing = missing_ops(target, ["Conv", *(["Slice"] if crops else [])])
    if missing:
        return missing
    return TransposedPlan("subpixel", pads, interleave, subpixel=plan,
                          macs=subpixel_macs(spec, plan), interleave_reasons=tuple(not_taken))


def _zero_insertion_form(spec: ConvSpec, target: Target, pads) -> TransposedPlan | Decline:
    plan = plan_zero_insertion(spec, pads)
    if isinstance(plan, Decline):
        return plan
    upsample = any(s > 1 for s in plan.stride)
    crop = any(q < 0 for q in plan.pads)
    missing = missing_ops(target, ["Conv"] + (["Reshape", "Pad"] if upsample else [])
                       + (["Slice"] if crop else []))
    if missing:
        return missing
    return TransposedPlan("zero_insertion", pads, "none", zero_insertion=plan,
                          macs=zero_insertion_macs(spec, pads))


FORM_NAMES = {"subpixel": "sub-pixel", "zero_insertion": "zero insertion"}


def plan_transposed(spec: ConvSpec, target: Target) -> tuple[TransposedPlan, list[str]] | Decline:
    """The cheaper (by MACs) of the forms the target's rewrite options allow and its ops list
    can run, and why each other form was not taken. The sub-pixel form multiplies no inserted
    zero, so it wins wherever it can be built; zero insertion takes dilated transposed convs and
    kernels smaller than their stride. A weight known only at run time is laid out in the
    graph (Transpose / Reshape, a reversed Slice: ``weights.runtime_conv_layout_ops``), where the
    target runs those ops. Both keep every tensor they make at most 4-D for 1-D and
    2-D convs (the interleave and the upsampling reshape to [A, L, s, B])."""
    if spec.op_type != "ConvTranspose":
        return Decline(f"{spec.op_type} is not a transposed conv")
    pads = transposed_pads(spec)
    if isinstance(pads, Decline):
        return pads
    if not spec.constant_weight:    # laid out in the graph: both forms read it as a Conv weight
        missing = missing_ops(target, runtime_conv_layout_ops(spec.weight_shape, spec.groups))
        if missing:
            return Decline(f"{missing.reason}, to lay out its weight (computed at run time) as a "
                           "conv's: in/out channels swapped, taps flipped")
    wanted = target.rewrite.transposed_form
    built, reasons = [], []
    for name, form in (("subpixel", _subpixel_form), ("zero_insertion", _zero_insertion_form)):
        if wanted not in ("auto", name):
            continue
        plan = form(spec, target, pads)
        if isinstance(plan, Decline):
            reasons.append(f"{FORM_NAMES[name]}: {plan.reason}")
        else:
            built.append(plan)
    if not built:
        return Decline("; ".join(reasons))
    best = min(built, key=lambda p: p.macs if p.macs is not None else 0)
    for other in built:
        if other is not best and best.macs and other.macs:
            reasons.append(f"{FORM_NAMES[other.form]}: {other.macs / best.macs:.3g}x the MACs")
    return best, reasons
