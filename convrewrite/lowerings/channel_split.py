"""Channel split: a conv too wide for the engine becomes sub-convs, summed and concatenated.

Too many input channels → the input is cut into channel chunks (one Split, or one Slice per chunk),
one sub-conv per chunk with the matching weight slice, partial outputs summed with Add (bias on the
first term only). Too many output channels → sub-convs over output chunks, joined by Concat. Grouped
and depthwise convs are cut on group boundaries. The decision is ``plan.channels``'s; the emitter
(``emit_channel_plan``) also serves the group lowering.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..build.builder import Builder, ConvSite
from ..conv import INTEGER_CONVS, ConvSpec, dims_text
from ..decline import Decline
from ..plan.channels import ChannelSplitPlan, SubConv, plan_channel_split, split_cost
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, missing_ops, register


@dataclass(frozen=True)
class ChannelEmit:
    plan: ChannelSplitPlan
    use_split: bool                 # cut the input with one Split (else a Slice per chunk)


def use_split(target: Target) -> bool:
    return target.rewrite.input_split == "split" and target.allows_op("Split") \
        or not target.allows_op("Slice")


def split_ops(plan: ChannelSplitPlan, target: Target) -> set[str]:
    """The ops emitting ``plan`` needs besides Conv."""
    needed = {"Add"} if plan.reassociates else set()
    if len(plan.blocks) > 1:
        needed.add("Concat")
    if len(plan.input_ranges) > 1:
        needed.add("Split" if use_split(target) else "Slice")
    return needed


def channel_emit(plan: "ChannelSplitPlan | Decline", target: Target) -> "ChannelEmit | Decline":
    """The plan with how its input is cut, or why the target cannot run it."""
    if isinstance(plan, Decline):
        return plan
    return missing_ops(target, split_ops(plan, target)) or ChannelEmit(plan, use_split(target))


def weight_sum_target(spec: ConvSpec, target: Target) -> "Target | Decline":
    """The target with its input-channel limit lowered so that a conv breaking max_weight_sum is
    cut into n = ceil(sum / limit) input chunks, each holding about 1/n of every output channel's
    taps. A chunk is quantized on its own, at a scale no larger than the whole channel's, so its
    sum can still exceed the limit; the fixpoint then checks that sub-conv's own exact sum and
    splits it again (each round at least halves its channels)."""
    limit = target.conv.max_weight_sum
    total = None if limit is None else spec.weight_sum
    if total is None or total <= limit:
        return target
    if spec.in_per_group == 1:
        return Decline(f"one input channel's {dims_text(spec.kernel_shape)} kernel alone sums "
                       f"to {total} > {limit} (a kernel split would be needed)")
    parts = -(-total // limit)
    most = max(1, -(-spec.in_per_group // parts))
    if target.conv.max_in_channels is not None:
        most = min(most, target.conv.max_in_channels)
    return replace(target, conv=replace(target.conv, max_in_channels=most))


@register
class ChannelSplit(Lowering):
    name = "channel_split"
    fixes = rules_named("max_in_channels", "max_out_channels", "max_weight_sum")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        if spec.op_type in INTEGER_CONVS:
            return Decline(f"{spec.op_type} is an integer conv: integer_split splits it")
        target = weight_sum_target(spec, target)
        if isinstance(target, Decline):
            return target
        detail = channel_emit(plan_channel_split(spec, target), target)
        if isinstance(detail, Decline):
            return detail
        return Planned(detail, f"{detail.plan.strategy} ({cost_text(spec, detail)})",
                       "reassociating" if detail.plan.reassociates else "exact")

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        return emit_channel_plan(b, site, planned.detail)


def cost_text(spec: ConvSpec, emit: ChannelEmit) -> str:
    """What the split costs by plan/cost.py's model, for the record: the user sees what each
    split is expected to cost at run time next to how it was cut."""
    after, before, known = split_cost(spec, emit.plan, emit.use_split)
    return f"cost model x{after / before:.2f} the conv" + ("" if known else ", map size unknown")


class FloatTerms:
    """How a float conv's plan is built: each sub-conv a conv of the site's op (the bias on the
    first term of a block), each block the sum of its terms. The integer split
    (``integer_split``) builds its sub-convs and joins its blocks in its own way."""

    def term(self, b: Builder, site: ConvSite, block, t: int, x, w, stem: str, attrs: dict,
             out=None, shape=None):
        inputs = [x, w]
        if site.bias is not None and t == 0:
            inputs.append(b.bias(site, block.out_start, block.out_stop, stem))
        return b.conv(site, inputs, stem, attrs, out=out, shape=shape)

    def join(self, b: Builder, site: ConvSite, block, terms: list, accumulate: str, stem: str,
             out=None):
        return b.sum(terms, accumulate, stem, out=out)


def emit_channel_plan(b: Builder, site: ConvSite, emit: ChannelEmit, form=FloatTerms()):
    """The plan's sub-convs, built the ``form``'s way; returns the tensor they compute (the
    site's output)."""
    plan, spec, base = emit.plan, site.spec, site.name
    ranges = plan.input_ranges
    if len(ranges) == 1:
        chunk_of = {ranges[0]: site.x}
    else:
        chunk_of = dict(zip(ranges, b.split_channels(site.x, ranges, f"{base}/in_split",
                                                      emit.use_split, f"{base}/in_slice")))
    y_shape = b.shape(site.y) if site.y is not None else None
    block_outputs = []
    single_block = len(plan.blocks) == 1
    for i, block in enumerate(plan.blocks):
        terms = []
        for t, sub in enumerate(block.terms):
            tag = f"o{i}" if len(block.terms) == 1 else f"o{i}.i{t}"
            stem = b.fresh(f"{base}/conv.{tag}")
            if sub.block_diagonal:
                rows = site.weight.take_rows(slice(sub.out_start, sub.out_stop), f"{stem}.rows")
                w = b.weight(rows.block_diagonal(sub.groups), (slice(None),), stem)
            else:
                w = b.weight(site.weight, weight_index(spec, sub), stem)
            last = single_block and len(block.terms) == 1
            shape = None
            if y_shape is not None:
                shape = list(y_shape)
                shape[1] = block.out_stop - block.out_start
            attrs = dict(site.attrs, group=1 if sub.block_diagonal else sub.groups)
            terms.append(form.term(b, site, block, t, chunk_of[(sub.in_start, sub.in_stop)], w,
                                   stem, attrs, out=site.y if last else None, shape=shape))
        block_outputs.append(form.join(b, site, block, terms, plan.accumulate,
                                       f"{base}/sum.o{i}", out=site.y if single_block else None))
    if single_block:
        return block_outputs[0]
    return b.concat(block_outputs, 1, f"{base}/concat", out=site.y)


def weight_index(spec: ConvSpec, sub: SubConv) -> tuple[slice, slice]:
    """The weight slice a sub-conv uses, in the op's own weight layout."""
    if not spec.transposed:         # [Cout, Cin/G, k...]
        return slice(sub.out_start, sub.out_stop), slice(sub.w_in_start, sub.w_in_stop)
    cout_g = spec.out_per_group    # ConvTranspose: [Cin, Cout/G, k...]
    first = sub.out_start - (sub.out_start // cout_g) * cout_g
    width = sub.out_channels if sub.groups == 1 else cout_g
    return slice(sub.in_start, sub.in_stop), slice(first, first + width)
