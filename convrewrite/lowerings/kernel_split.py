"""Kernels larger than the engine allows: sum of legal sub-kernels over shifted input views.

Larger is measured as the target does: taps (``max_kernel``, ``kernel_shapes``) or the dilated
extent (``max_dilated_kernel_height`` / ``_area``); a sub-kernel keeps the conv's dilation, so
a tile of t taps starts t * dilation rows after the previous one. The tile is
``plan.kernel``'s choice, by cost.

The kernel is zero-extended to a multiple of the legal tile (the input gets the matching extra
padding, so every piece sees the same number of outputs), cut into tiles, and each tile becomes a
conv over the padded input starting at the tile's offset: a Slice of it, or (a target without
Slice, NVDLA) a window of one Split per axis plus Concat where windows overlap. Sums are
regrouped: reassociating.

An integer conv is split exactly: its input padded with its zero point (what the conv pads
with), the kernel extended with the weight zero point (so the extra taps add nothing), each tile
an int32 partial sum (``integer_split.integer_partial``: ConvInteger), the partial sums added in
int32 and, for a QLinearConv, the bias added and the total requantized once
(``Builder.requantize``), as the input-channel split does. Where that cannot be built (no
ConvInteger in the ops list), the taps are folded into channels instead (``_fold_taps``): each
tap's strided view of the padded input stacked by one Concat, read by one 1x1 conv of the same
op whose weight holds the taps side by side: the same int32 sum in another order, the conv's own
requantization, bit-exact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import prod

import numpy as np

from ..build.builder import Builder, ConvSite
from ..build.onnx_read import INT64_MAX
from ..build.windows import cut_windows
from ..conv import INTEGER_CONVS, ConvSpec, dims_text
from ..decline import Decline, Declined
from ..plan.kernel import KernelPlan, plan_kernel_split, view_cuts
from ..plan.padding import explicit_pads
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, missing_ops, register
from .integer_split import integer_partial, plan_requantize

# The report names the cheapest few rejected tiles (a dilated-area frontier has dozens).
SHOWN_ALTERNATIVES = 3


@dataclass(frozen=True)
class KernelEmit:
    plan: KernelPlan
    pads: tuple[int, ...]
    cuts: tuple                 # (axis, AxisCut) per cut axis: views by Split (no Slice), else ()
    requantize: bool            # a QLinearConv's tiles summed in int32, requantized once
    accumulate: str             # the order of the tiles' sum (``rewrite.accumulate``)


@dataclass(frozen=True)
class TapFold:
    """An integer conv's taps folded into its input channels (``_fold_taps``)."""

    pads: tuple[int, ...]


@register
class KernelSplit(Lowering):
    name = "kernel_split"
    fixes = rules_named("kernel_shapes", "max_kernel", "max_dilated_kernel_height",
                        "max_dilated_kernel_area")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        pads = explicit_pads(spec)
        if isinstance(pads, Decline):
            return pads
        plan = plan_kernel_split(spec, target)
        if isinstance(plan, Decline):
            return plan
        count = prod(plan.pieces)
        cuts = () if target.allows_op("Slice") else view_cuts(spec, plan, pads)
        if isinstance(cuts, Decline):
            return cuts
        cut_ops = [] if count == 1 else ["Slice"] if not cuts else \
            ["Split"] + (["Concat"] if any(c.overlapping for _, c in cuts) else [])
        # a weight computed at run time, zero-extended and taken whole: Concat with zeros
        # (``RuntimeWeight.slice``)
        whole_extended = count == 1 and not spec.constant_weight and \
            tuple(plan.padded_kernel) != tuple(spec.kernel_shape)
        integer = spec.op_type in INTEGER_CONVS
        requantized = integer_plan(spec, target, count) if integer else None
        if isinstance(requantized, Decline):
            return plan_fold(spec, target, pads, requantized)
        missing = missing_ops(target, cut_ops + ["Pad"] + (["Add"] if count > 1 else [])
                              + (["Concat"] if whole_extended else []))
        if missing:
            return missing
        taps = prod(t * p for t, p in zip(plan.tile, plan.pieces))
        original_taps = prod(spec.kernel_shape)
        shown = plan.alternatives[:SHOWN_ALTERNATIVES]
        alternatives = "; ".join(f"{dims_text(t)} cost {c}" for t, c in shown) + (
            f"; {len(plan.alternatives) - len(shown)} costlier"
            if len(plan.alternatives) > len(shown) else "")
        how = (f"{count} {dims_text(plan.tile)} sub-kernels "
               f"({dims_text(plan.padded_kernel)} zero-extended, cost {plan.cost}"
               + (f"; rejected {alternatives}" if alternatives else "") + ")"
               + (", views cut by Split and Concat (the target has no Slice)" if cuts else "")
               + (f"; {requantized}" if requantized else "")
               + ("; int32 partial sums (ConvInteger) added" if integer and count > 1
                  and requantized is None else ""))
        return Planned(KernelEmit(plan, pads, cuts, requantized is not None,
                                  target.rewrite.accumulate), how,
                       "reassociating" if count > 1 and not integer else "exact",
                       macs_factor=taps / original_taps,
                       params_after=spec.params * taps // original_taps)

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        if isinstance(planned.detail, TapFold):
            return _fold_taps(b, site, planned.detail.pads)
        return _emit_tiles(b, site, planned.detail)


def integer_plan(spec: ConvSpec, target: Target, count: int) -> "str | None | Decline":
    """For an integer conv: how its tiles' sum is requantized (a QLinearConv of several tiles),
    None where nothing is, or why it cannot be split exactly."""
    if not spec.constant_weight:
        return Decline(f"a {spec.op_type} weight computed at run time is not cut into taps (its "
                       "zero-extended taps need the weight zero point)")
    if spec.op_type == "QLinearConv" and count > 1:
        return plan_requantize(spec, target, "a kernel split")
    if not spec.weight_zero_points:     # the kernel is extended with it
        return Decline(f"a kernel split of a {spec.op_type} extends the kernel with the weight "
                       "zero point; this one is computed in the graph")
    return None


def plan_fold(spec: ConvSpec, target: Target, pads: tuple[int, ...],
              split: Decline) -> "Planned | Decline":
    """Where the integer kernel split declines (no ConvInteger for int32 partial sums): the
    taps folded into channels, or both reasons. Declined where the stack is over the channel
    limit or the conv is grouped (a grouped stack would interleave groups and taps)."""
    fold = _fold_decline(spec, target)
    if fold is not None:
        return Decline(f"{split.reason}; folding the taps into channels instead: {fold.reason}")
    taps = prod(spec.kernel_shape)
    return Planned(TapFold(pads), (
        f"{taps} taps stacked in channels ({spec.in_channels} -> {spec.in_channels * taps}, one "
        "Concat of strided Slices of the zero-point padded input), one 1x1 conv: the same int32 "
        "sum"), "exact")


def _fold_decline(spec: ConvSpec, target: Target) -> "Decline | None":
    missing = missing_ops(target, ["Pad", "Slice", "Concat"])
    if missing:
        return missing
    if not spec.constant_weight:
        return Decline(f"a {spec.op_type} weight computed at run time is not folded into "
                       "channels")
    taps = prod(spec.kernel_shape)
    stacked = spec.in_channels * taps
    limit = target.conv.max_in_channels
    if spec.groups != 1:
        return Decline(f"a grouped {spec.op_type} (groups {spec.groups}) is not folded into "
                       "channels")
    if limit is not None and stacked > limit:
        return Decline(f"its {taps} taps stacked in channels make {stacked} input channels, "
                       f"over the target's {limit}")
    out_shape = spec.output_shape[2:] if spec.output_shape else None
    if out_shape is None or any(not isinstance(d, int) for d in out_shape):
        return Decline("the output's spatial size is not static: the taps' views need it")
    return None


def _emit_tiles(b: Builder, site: ConvSite, emit: KernelEmit):
    spec, plan, pads = site.spec, emit.plan, emit.pads
    rank, base = spec.rank, site.name
    count = prod(plan.pieces)
    integer = spec.op_type in INTEGER_CONVS
    weight = site.weight.respaced(plan.padded_kernel, empty=b.weight_zero_points(site)) \
        if integer else site.weight.respaced(plan.padded_kernel)
    overflow = [(kp - k) * d for kp, k, d in
                zip(plan.padded_kernel, spec.kernel_shape, spec.dilations)]
    x = b.pad_spatial(site.x, list(pads[:rank]), [e + o for e, o in zip(pads[rank:], overflow)],
                      f"{base}/pad", value=site.pad_value)
    partial = integer and count > 1         # each tile an int32 partial sum
    views = None if not emit.cuts else cut_windows(
        b, x, [2 + a for a, _ in emit.cuts], [c for _, c in emit.cuts],
        lambda depth, prefix: f"{base}/view_split{depth}" + "".join(f".{i}" for i in prefix))
    terms = []
    for index in itertools.product(*(range(p) for p in plan.pieces)):
        tag = ".".join(map(str, index))
        stem = b.fresh(f"{base}/tap{tag}")
        starts = [i * t * d for i, t, d in zip(index, plan.tile, spec.dilations)]
        ends = [-((p - 1 - i) * t * d) or INT64_MAX
                for i, p, t, d in zip(index, plan.pieces, plan.tile, spec.dilations)]
        if views is not None:
            view = views[tuple(index[a] for a, _ in emit.cuts)]
        elif not any(starts) and all(e == INT64_MAX for e in ends):
            view = x
        else:
            view = b.slice_axes(x, list(range(2, 2 + rank)), starts, ends, [1] * rank,
                                f"{stem}/view")
        w = b.weight(weight, (slice(None), slice(None),
                              *(slice(i * t, (i + 1) * t) for i, t in zip(index, plan.tile))),
                     stem)
        attrs = site.conv_attrs(kernel_shape=list(plan.tile), pads=[0] * (2 * rank))
        if partial:
            terms.append(integer_partial(b, site, view, w, (0, spec.out_channels), stem, attrs))
            continue
        inputs = site.operands(view, w) if integer else \
            [view, w] + ([b.bias(site, 0, spec.out_channels, stem)]
                         if site.bias is not None and not terms else [])
        terms.append(b.conv(site, inputs, stem, attrs, out=site.y if count == 1 else None))
    if count == 1:
        return terms[0]
    if emit.requantize:
        total = b.sum(terms, emit.accumulate, f"{base}/tap_sum")
        return b.requantize(total, site, 0, spec.out_channels, f"{base}/requant", out=site.y)
    return b.sum(terms, emit.accumulate, f"{base}/tap_sum", out=site.y)


def _fold_taps(b: Builder, site: ConvSite, pads: tuple[int, ...]):
    """``site``'s output as one 1x1 conv over its taps stacked in channels."""
    spec, rank, base = site.spec, site.spec.rank, site.name
    x = b.pad_spatial(site.x, list(pads[:rank]), list(pads[rank:]), f"{base}/pad",
                      value=site.pad_value)
    out_shape = spec.output_shape[2:]
    views = []
    for tap in itertools.product(*(range(k) for k in spec.kernel_shape)):
        starts = [t * d for t, d in zip(tap, spec.dilations)]
        ends = [s + (o - 1) * st + 1 for s, o, st in zip(starts, out_shape, spec.strides)]
        views.append(b.slice_axes(x, list(range(2, 2 + rank)), starts, ends,
                                  list(spec.strides), b.fresh(f"{base}/tap")))
    stack = b.concat(views, 1, b.fresh(f"{base}/taps"))
    stacked = spec.in_channels * prod(spec.kernel_shape)
    # W[o, c, k...] -> W'[o, tap * C + c]: the stack's channel order (tap-major)
    values = np.moveaxis(site.weight.values, 1, -1).reshape(spec.out_channels, stacked)
    try:
        taps = site.weight.with_values(values.reshape(spec.out_channels, stacked, *[1] * rank))
    except ValueError as exc:
        raise Declined(str(exc)) from None
    w = b.weight(taps, (slice(None),), f"{base}/taps")
    return b.conv(site, site.operands(stack, w), b.fresh(f"{base}/taps_conv"),
                  site.conv_attrs(kernel_shape=[1] * rank, pads=[0] * (2 * rank),
                                  strides=[1] * rank, dilations=[1] * rank), out=site.y)
