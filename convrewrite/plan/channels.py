"""Channel plans: a conv too wide for the engine (channel split), or a grouped form the engine
lacks (group lowering), as sub-convs over channel ranges, summed and concatenated.

A channel plan is a list of output blocks, concatenated in order along the channel axis; each
block is the sum of one or more sub-convs. A sub-conv reads a contiguous range of input channels and
computes a contiguous range of output channels with a contiguous range of the weight's per-group
input channels. This one shape covers every case: dense grids (in-chunks × out-chunks), chunks of
whole groups (grouped and depthwise convs), and splits within one over-wide group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from math import ceil

from ..conv import ConvSpec
from ..decline import Decline
from ..target import Target
from .cost import (COPY_ELEMENT_COST_IN_MACS, COPY_NODE_COST_IN_MACS, COSTING_PIXELS,
                   NODE_COST_IN_MACS, costed_pixels, shallow_gemm_penalty)


@dataclass(frozen=True)
class SubConv:
    in_start: int          # absolute input channel range read
    in_stop: int
    out_start: int         # absolute output channel range produced
    out_stop: int
    groups: int            # groups of the sub-conv itself
    w_in_start: int        # range of the weight's per-group input axis
    w_in_stop: int
    block_diagonal: bool = False   # emit as one dense conv (groups=1) with zero blocks

    @property
    def in_channels(self) -> int:
        return self.in_stop - self.in_start

    @property
    def out_channels(self) -> int:
        return self.out_stop - self.out_start


@dataclass(frozen=True)
class OutputBlock:
    out_start: int
    out_stop: int
    terms: tuple[SubConv, ...]     # summed; the bias goes on the first term only


@dataclass(frozen=True)
class ChannelSplitPlan:
    blocks: tuple[OutputBlock, ...]
    accumulate: str                # "chain" or "tree"
    strategy: str                  # a short human description for the report

    @property
    def sub_convs(self) -> list[SubConv]:
        return [t for b in self.blocks for t in b.terms]

    @property
    def input_ranges(self) -> list[tuple[int, int]]:
        """Distinct input channel ranges in channel order (they partition the input)."""
        return sorted({(t.in_start, t.in_stop) for t in self.sub_convs})

    @property
    def reassociates(self) -> bool:
        """True when some output is a sum of partial convs (floating-point order changes)."""
        return any(len(b.terms) > 1 for b in self.blocks)


def balanced_chunks(total: int, limit: int, align: int = 1) -> list[tuple[int, int]]:
    """Split ``range(total)`` into the fewest chunks of at most ``limit``, as equal as possible,
    with every boundary on a multiple of ``align`` where that does not cost an extra chunk."""
    if total <= limit:
        return [(0, total)]
    if align > 1 and align <= limit:
        units = ceil(total / align)
        n = ceil(total / limit)
        while ceil(units / n) * align > limit:
            n += 1
        if n == ceil(total / limit):
            sizes = [(units // n + (1 if i < units % n else 0)) * align for i in range(n)]
            sizes[-1] -= units * align - total      # the last chunk takes the ragged remainder
            if sizes[-1] > 0:
                return ranges_of_sizes(sizes)
    n = ceil(total / limit)
    return ranges_of_sizes([total // n + (1 if i < total % n else 0) for i in range(n)])


def ranges_of_sizes(sizes: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


def plan_channel_split(spec: ConvSpec, target: Target) -> ChannelSplitPlan | Decline:
    """Plan sub-convs that respect the channel limits, or return why it cannot be done."""
    rules = target.conv
    max_in = rules.max_in_channels or spec.in_channels
    max_out = rules.max_out_channels or spec.out_channels
    align = rules.channel_align
    if spec.in_channels <= max_in and spec.out_channels <= max_out:
        return Decline("channels already within the limits")
    if spec.in_channels % spec.groups or spec.out_channels % spec.groups:
        return Decline(f"channels are not divisible by groups={spec.groups}")
    G, cin_g, cout_g = spec.groups, spec.in_per_group, spec.out_per_group
    accumulate = target.rewrite.accumulate
    groups_per_chunk = min(max_in // cin_g, max_out // cout_g, G)
    if groups_per_chunk >= 1:
        if G == 1:       # cannot happen: a single group fits, so the conv already fitted
            return Decline("channels already within the limits")
        # Whole groups per sub-conv: groups are independent, so blocks concatenate, no sums.
        # Align in channel units where possible (chunks of groups whose channel count is aligned).
        group_align = max(1, align // cin_g) if align % cin_g == 0 else 1
        chunks = balanced_chunks(G, groups_per_chunk, group_align)
        blocks = tuple(
            OutputBlock(g0 * cout_g, g1 * cout_g,
                        (SubConv(g0 * cin_g, g1 * cin_g, g0 * cout_g, g1 * cout_g, g1 - g0,
                                 0, cin_g),))
            for g0, g1 in chunks)
        counts = _sizes([g1 - g0 for g0, g1 in chunks])
        if cin_g == 1:
            strategy = f"{len(blocks)} depthwise chunks of {counts} channels"
        else:
            strategy = f"{len(blocks)} chunks of {counts} group{'' if counts == '1' else 's'}"
        return ChannelSplitPlan(blocks, accumulate, strategy)
    # A single group is too wide: split each group into an in-chunks x out-chunks grid.
    in_chunks = balanced_chunks(cin_g, max_in, align)
    out_chunks = balanced_chunks(cout_g, max_out, align)
    blocks = []
    for g in range(G):
        for o0, o1 in out_chunks:
            terms = tuple(SubConv(g * cin_g + i0, g * cin_g + i1, g * cout_g + o0, g * cout_g + o1,
                                  1, i0, i1) for i0, i1 in in_chunks)
            blocks.append(OutputBlock(g * cout_g + o0, g * cout_g + o1, terms))
    per_group = f"{len(in_chunks)} in x {len(out_chunks)} out chunks"
    strategy = per_group if G == 1 else f"{G} groups, each {per_group}"
    if len(in_chunks) > 1:
        strategy += f", {accumulate} sum"
    return ChannelSplitPlan(tuple(blocks), accumulate, strategy)


def _sizes(values: list[int]) -> str:
    distinct = sorted(set(values), reverse=True)
    return "/".join(map(str, distinct))


def sum_order(n: int, accumulate: str) -> list[tuple[int, int]]:
    """Pairs of operand indices in evaluation order; index ``n + k`` names the k-th partial sum.

    ``chain`` is ((t0 + t1) + t2) + ... — each Add has one conv operand, which runtimes fuse into
    the conv's accumulation. ``tree`` adds neighbours pairwise, bounding rounding growth at log2(n).
    """
    if accumulate == "chain":
        pairs, acc = [], 0
        for k in range(1, n):
            pairs.append((acc, k))
            acc = n + len(pairs) - 1
        return pairs
    pairs, level, nxt = [], list(range(n)), n
    while len(level) > 1:
        new = []
        for i in range(0, len(level) - 1, 2):
            pairs.append((level[i], level[i + 1]))
            new.append(nxt)
            nxt += 1
        if len(level) % 2:
            new.append(level[-1])
        level = new
    return pairs


def plan_group_lowering(spec: ConvSpec, target: Target,
                        groups_per_conv: int | None = None) -> ChannelSplitPlan | Decline:
    """A grouped or depthwise conv on an engine without that form: chunks of c groups, each one
    dense conv whose weight is block-diagonal (c = 1: a plain conv per group). c is chosen by
    cost: MACs grow c times, while every extra node costs NODE_COST_IN_MACS, cutting the input
    and joining the outputs copies both once, and a conv whose GEMM depth (input channels x
    taps) is shallow runs its MACs slower (``shallow_gemm_penalty``)."""
    if spec.group_form in target.conv.groups:
        return Decline(f"{spec.group_form} convs run natively")
    if "regular" not in target.conv.groups:
        return Decline("the engine runs no regular convs to lower to")
    if spec.in_channels % spec.groups or spec.out_channels % spec.groups:
        return Decline(f"channels are not divisible by groups={spec.groups}")
    G, cin_g, cout_g = spec.groups, spec.in_per_group, spec.out_per_group
    rules = target.conv
    largest = min(G, max(1, min((rules.max_in_channels or spec.in_channels) // cin_g,
                                (rules.max_out_channels or spec.out_channels) // cout_g)))
    known = spec.macs is not None and spec.input_shape is not None \
        and None not in spec.input_shape[2:]
    pixels_in = math.prod(spec.input_shape[2:]) if known else COSTING_PIXELS
    pixels_out = math.prod(spec.output_shape[2:]) if known and spec.output_shape and \
        None not in spec.output_shape[2:] else pixels_in
    macs = spec.out_channels * cin_g * math.prod(spec.kernel_shape) * pixels_out
    moves = 2 * COPY_NODE_COST_IN_MACS + COPY_ELEMENT_COST_IN_MACS * (
        spec.in_channels * pixels_in + spec.out_channels * pixels_out)
    scored = []
    candidates = {1, largest, *(d for d in range(1, largest + 1) if G % d == 0)}
    if groups_per_conv is not None:     # forced (benchmarks compare the forms side by side)
        candidates = {min(groups_per_conv, largest)}
    elif not spec.constant_weight:      # a computed weight is sliced, never made block-diagonal
        candidates = {1}
    for c in sorted(candidates):
        chunks = balanced_chunks(G, c)
        widest = max(b - a for a, b in chunks)
        depth = widest * cin_g * math.prod(spec.kernel_shape)
        cost = macs * widest * shallow_gemm_penalty(depth, spec.kernel_shape) \
            + len(chunks) * NODE_COST_IN_MACS \
            + (moves if len(chunks) > 1 else 0)
        scored.append((cost, c, chunks))
    scored.sort()
    cost, c, chunks = scored[0]
    blocks = tuple(
        OutputBlock(g0 * cout_g, g1 * cout_g,
                    (SubConv(g0 * cin_g, g1 * cin_g, g0 * cout_g, g1 * cout_g, g1 - g0, 0, cin_g,
                             block_diagonal=g1 - g0 > 1),))
        for g0, g1 in chunks)
    rejected = ", ".join(f"{k} per conv x{v / macs:.1f}" for v, k, _ in scored[1:3])
    form = f"{len(blocks)} per-group convs" if c == 1 else \
        f"{len(blocks)} dense conv{'s' if len(blocks) > 1 else ''} of {c} block-diagonal groups"
    if not known:
        form += f" (size unknown: costed as {COSTING_PIXELS} pixels)"
    if not spec.constant_weight and groups_per_conv is None:
        form += " (the weight is computed: one conv per group)"
    strategy = f"{form} (cost x{cost / macs:.1f}" + \
        (f"; rejected {rejected}" if rejected else "") + ")"
    return ChannelSplitPlan(blocks, target.rewrite.accumulate, strategy)


def _conv_costing(spec: ConvSpec):
    """(cost of a share of the conv's MACs at a GEMM depth, pixels in, pixels out, batch, known)."""
    pixels_out, known_out = costed_pixels(spec.output_shape[2:] if spec.output_shape else None)
    pixels_in, known_in = costed_pixels(spec.input_shape[2:] if spec.input_shape else None)
    batch = (spec.input_shape[0] if spec.input_shape else None) or 1
    pixels_mac = pixels_in if spec.transposed else pixels_out
    macs = batch * pixels_mac * spec.out_channels * spec.in_channels // spec.groups \
        * math.prod(spec.kernel_shape)

    def conv_cost(share: float, depth: int) -> float:
        return share * macs * shallow_gemm_penalty(depth, spec.kernel_shape) + NODE_COST_IN_MACS

    return conv_cost, pixels_in, pixels_out, batch, known_out and known_in


def conv_alone_cost(spec: ConvSpec) -> float:
    """The conv's cost by the cost model, unsplit, in MACs."""
    conv_cost = _conv_costing(spec)[0]
    return conv_cost(1.0, spec.in_per_group * math.prod(spec.kernel_shape))


def split_cost(spec: ConvSpec, plan: ChannelSplitPlan,
               use_split: bool) -> tuple[float, float, bool]:
    """What the split costs and what the conv alone costs by the cost model (plan/cost.py), in
    MACs, and whether the map size was known (else COSTING_PIXELS stands for it).

    Each sub-conv pays its share of the MACs (more per MAC where its GEMM is shallow) and one
    NODE_COST_IN_MACS; cutting the input and joining the blocks are copies (COPY_*); Adds of a
    chain are free (onnxruntime fuses each into its conv operand's accumulation), a tree's Adds of
    two partial sums are copies. The Split/Concat that chunk fusion removes later still count: this
    is the cost of the split alone, as the record shows it."""
    conv_cost, pixels_in, pixels_out, batch, known = _conv_costing(spec)
    taps = math.prod(spec.kernel_shape)
    whole = spec.out_channels * spec.in_channels // spec.groups
    before = conv_alone_cost(spec)
    after = 0.0
    for sub in plan.sub_convs:
        groups = 1 if sub.block_diagonal else sub.groups
        after += conv_cost(sub.out_channels * sub.in_channels / groups / whole,
                           sub.in_channels // groups * taps)
    if len(plan.input_ranges) > 1:
        cuts = 1 if use_split else len(plan.input_ranges)
        after += cuts * COPY_NODE_COST_IN_MACS \
            + COPY_ELEMENT_COST_IN_MACS * batch * spec.in_channels * pixels_in
    for block in plan.blocks:
        n = len(block.terms)
        unfused = sum(1 for a, b in sum_order(n, plan.accumulate) if a >= n and b >= n)
        after += unfused * (COPY_NODE_COST_IN_MACS + COPY_ELEMENT_COST_IN_MACS * batch
                            * (block.out_stop - block.out_start) * pixels_out)
    if len(plan.blocks) > 1:
        after += COPY_NODE_COST_IN_MACS \
            + COPY_ELEMENT_COST_IN_MACS * batch * spec.out_channels * pixels_out
    return after, before, known
