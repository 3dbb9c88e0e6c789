"""Planners: pure decisions over a ConvSpec and a Target, shared by every emitter.

A channel-split plan is a list of output blocks, concatenated in order along the channel axis; each
block is the sum of one or more sub-convs. A sub-conv reads a contiguous range of input channels and
computes a contiguous range of output channels with a contiguous range of the weight's per-group
input channels. This one shape covers every case: dense grids (in-chunks × out-chunks), chunks of
whole groups (grouped and depthwise convs), and splits within one over-wide group.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from math import ceil

from .conv import ConvSpec, dims_text
from .target import Target


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
                return _ranges(sizes)
    n = ceil(total / limit)
    return _ranges([total // n + (1 if i < total % n else 0) for i in range(n)])


def _ranges(sizes: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


def plan_channel_split(spec: ConvSpec, target: Target) -> ChannelSplitPlan | str:
    """Plan sub-convs that respect the channel limits, or return why it cannot be done."""
    rules = target.conv
    max_in = rules.max_in_channels or spec.in_channels
    max_out = rules.max_out_channels or spec.out_channels
    align = rules.channel_align
    if spec.in_channels <= max_in and spec.out_channels <= max_out:
        return "channels already within the limits"
    if spec.in_channels % spec.groups or spec.out_channels % spec.groups:
        return f"channels are not divisible by groups={spec.groups}"
    G, cin_g, cout_g = spec.groups, spec.in_per_group, spec.out_per_group
    accumulate = target.rewrite.accumulate
    groups_per_chunk = min(max_in // cin_g, max_out // cout_g, G)
    if groups_per_chunk >= 1:
        if G == 1:       # cannot happen: a single group fits, so the conv already fitted
            return "channels already within the limits"
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


# ---------------------------------------------------------------- geometry planners

@dataclass(frozen=True)
class StridePlan:
    conv_strides: tuple[int, ...]      # what the conv keeps
    input_steps: tuple[int, ...]       # subsample the input first (1x1 kernels without padding)
    output_steps: tuple[int, ...]      # subsample the output after

    @property
    def mac_factor(self) -> int:
        """How many more outputs the conv computes than the original (dropped by the slice)."""
        out = 1
        for step in self.output_steps:
            out *= step
        return out


def plan_stride(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> StridePlan | str:
    """Strides over the limit become a legal conv stride plus subsampling. A 1x1 kernel without
    padding subsamples its input (no wasted MACs); other kernels subsample their output."""
    limit = target.conv.max_stride or max(spec.strides)
    conv_strides, input_steps, output_steps = [], [], []
    for d, s in enumerate(spec.strides):
        keep = max(k for k in range(1, min(s, limit) + 1) if s % k == 0)
        step = s // keep
        conv_strides.append(keep)
        pointwise = spec.kernel_shape[d] == 1 and pads[d] == 0 and pads[d + spec.rank] == 0
        input_steps.append(step if pointwise else 1)
        output_steps.append(1 if pointwise else step)
    if tuple(conv_strides) == spec.strides:
        return "strides already within the limit"
    return StridePlan(tuple(conv_strides), tuple(input_steps), tuple(output_steps))


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


def plan_padding(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> PadPlan | str:
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
                return f"the engine pads (k-1)/2 on each side; kernel extent {span} is even"
            want = (span - 1) // 2
            if rules.max_pad is not None and want > rules.max_pad:
                return f"same padding {want} for this kernel exceeds max_pad {rules.max_pad}"
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
                return "cropping a strided conv's extra outputs needs a static output size"
            crop_ends[d] = crop_starts[d] + length
    return PadPlan(tuple(conv_pads), tuple(extra_in), tuple(crop_starts), tuple(crop_ends))


@dataclass(frozen=True)
class KernelPlan:
    tile: tuple[int, ...]              # the legal sub-kernel
    pieces: tuple[int, ...]            # sub-kernels per spatial dim
    cost: int                          # taps computed + node overhead, the chooser's score
    alternatives: tuple[tuple[tuple[int, ...], int], ...]   # (tile, cost) of the others

    @property
    def padded_kernel(self) -> tuple[int, ...]:
        return tuple(t * p for t, p in zip(self.tile, self.pieces))


NODE_COST_IN_TAPS = 4    # a sub-conv's fixed cost (launch, input pass) in kernel taps per output


def _legal_tiles(spec: ConvSpec, target: Target) -> list[tuple[int, ...]]:
    rules = target.conv
    if rules.kernel_shapes is not None:
        tiles = [k for k in rules.kernel_shapes if len(k) == spec.rank]
    else:
        tiles = [tuple(min(k, rules.max_kernel or k) for k in spec.kernel_shape)]
    if rules.max_kernel is not None:
        tiles = [t for t in tiles if max(t) <= rules.max_kernel]
    return tiles


def plan_kernel_split(spec: ConvSpec, target: Target) -> KernelPlan | str:
    """Cover the kernel with legal sub-kernels (zero-padding it to a multiple of the tile), each
    applied to a shifted view of the input and summed. The tile is chosen by cost: kernel taps
    computed (zeros included) plus a fixed cost per sub-conv."""
    tiles = _legal_tiles(spec, target)
    if not tiles:
        return f"the target allows no {spec.rank}-D kernel shape to build from"
    scored = []
    for tile in tiles:
        pieces = tuple(-(-k // t) for k, t in zip(spec.kernel_shape, tile))
        count = 1
        taps = 1
        for t, p in zip(tile, pieces):
            count *= p
            taps *= t * p
        scored.append((taps + NODE_COST_IN_TAPS * count, count, tile, pieces))
    scored.sort()
    cost, count, tile, pieces = scored[0]
    if pieces == (1,) * spec.rank and tile == spec.kernel_shape:
        return "kernel already legal"
    if count > MAX_LOWERED_NODES:
        return f"{count} sub-kernels would be needed (limit {MAX_LOWERED_NODES})"
    others = tuple((t, c) for c, _, t, _ in scored[1:])
    return KernelPlan(tile, pieces, cost, others)


@dataclass(frozen=True)
class DilationPlan:
    kernel: tuple[int, ...]            # the dense kernel with the holes filled by zeros
    dilations: tuple[int, ...]         # what the conv keeps

    def mac_factor(self, spec: ConvSpec) -> float:
        dense, original = 1, 1
        for k, o in zip(self.kernel, spec.kernel_shape):
            dense, original = dense * k, original * o
        return dense / original


def plan_dilation(spec: ConvSpec, target: Target) -> DilationPlan | str:
    """Dilation over the limit: write the holes into the kernel as zeros (Vela's answer for
    dilation > 2). Each dimension keeps the largest legal dilation dividing its own, so a 4 on an
    engine that dilates by 2 only doubles the kernel's extent, not quadruples it."""
    limit = target.conv.max_dilation or max(spec.dilations)
    kernel, dilations = [], []
    for k, d in zip(spec.kernel_shape, spec.dilations):
        keep = max(x for x in range(1, min(d, limit) + 1) if d % x == 0)
        factor = d // keep
        kernel.append((k - 1) * factor + 1)
        dilations.append(keep)
    if tuple(dilations) == spec.dilations:
        return "dilations already within the limit"
    weights = spec.out_channels * spec.in_per_group * math.prod(kernel)
    if weights > MAX_LOWERED_WEIGHTS:
        return (f"a dense kernel {dims_text(kernel)} would hold {weights:,} weights "
                f"(limit {MAX_LOWERED_WEIGHTS:,})")
    return DilationPlan(tuple(kernel), tuple(dilations))


# Lowerings that multiply weights or nodes stop here and say so, instead of writing a model
# that does not fit in memory (a 73x73 dense kernel for a 960->256 conv is 5 GB).
MAX_LOWERED_WEIGHTS = 64_000_000
MAX_LOWERED_NODES = 1024


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


def plan_subpixel(spec: ConvSpec, pads: tuple[int, ...]) -> SubPixelPlan | str:
    """ConvTranspose as stride**rank small convs on the input itself, one per output phase,
    interleaved: out[q*s + r] = sum_j x[q + a - j] * W[rho + j*s] with r + p = a*s + rho.
    Nothing is multiplied by an inserted zero."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return "the sub-pixel form needs a static input size"
    if any(d != 1 for d in spec.dilations):
        return "the sub-pixel form does not take dilated transposed convs yet"
    rank = spec.rank
    if rank > 2:
        return "the sub-pixel form handles 1-D and 2-D transposed convs"
    if rank == 2 and spec.strides[0] != spec.strides[1]:
        return "the sub-pixel form interleaves with DepthToSpace, which needs equal strides"
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


def plan_zero_insertion(spec: ConvSpec, pads: tuple[int, ...]) -> ZeroInsertionPlan | str:
    """ConvTranspose as a stride-1 conv of the input with stride-1 zeros inserted after every
    element (the upsampled input has L*s entries: s-1 trailing zeros count as end padding),
    with the flipped kernel. Works for any rank, stride and dilation; costs s**rank more MACs
    than the sub-pixel form."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return "zero insertion needs a static input size"
    rank = spec.rank
    begins, ends = [], []
    for d in range(rank):
        span = spec.dilations[d] * (spec.kernel_shape[d] - 1)
        extra = spec.output_padding[d] if spec.output_padding else 0
        begins.append(span - pads[d])
        ends.append(span - pads[d + rank] + extra - (spec.strides[d] - 1))
    return ZeroInsertionPlan(tuple(spec.strides), tuple(begins + ends))


@dataclass(frozen=True)
class SpaceToBatchPlan:
    rate: tuple[int, ...]              # phases per axis (the dilation the batch absorbs)
    dilations: tuple[int, ...]         # what the conv keeps
    blocks: tuple[int, ...]            # input samples per phase and axis
    pads: tuple[int, ...]              # explicit Pad (begins, ends) so each axis is blocks*rate
    out_length: tuple[int, ...]        # the original conv's output extent

    @property
    def phases(self) -> int:
        out = 1
        for r in self.rate:
            out *= r
        return out

    def mac_factor(self, spec: ConvSpec) -> float:
        per_phase = [b - (k - 1) * d for b, k, d in
                     zip(self.blocks, spec.kernel_shape, self.dilations)]
        computed, wanted = self.phases, 1
        for p, n in zip(per_phase, self.out_length):
            computed, wanted = computed * p, wanted * n
        return computed / wanted

    def cost_factor(self, spec: ConvSpec) -> float:
        """MACs plus the two layout transposes (input and output moved once each), over the
        original's MACs."""
        if not spec.macs:
            return self.mac_factor(spec)
        batch = spec.input_shape[0] or 1
        moved = batch * self.phases * (spec.in_channels * math.prod(self.blocks)
                                       + spec.out_channels * math.prod(self.out_length)
                                       / self.phases)
        return self.mac_factor(spec) + LAYOUT_ELEMENT_COST_IN_MACS * moved / spec.macs


# What moving one element through a Reshape/Transpose costs, in MACs of a conv. Measured by
# benchmarks/geometry.py on onnxruntime CPU (2-core AVX-512): a 64->64 3x3 conv on 64x64 runs
# 151 M MACs in 0.67 ms; its space-to-batch layout ops moved 0.54 M elements in about 1.6 ms.
LAYOUT_ELEMENT_COST_IN_MACS = 680


def _size_floor(target: Target, rank: int, axis: int) -> int | None:
    """The engine's minimum input extent on a spatial axis (height and width rules)."""
    from_end = rank - axis
    bounds = {1: target.conv.input_width, 2: target.conv.input_height}.get(from_end)
    return bounds[0] if bounds else None


def plan_space_to_batch(spec: ConvSpec, target: Target,
                        pads: tuple[int, ...]) -> SpaceToBatchPlan | str:
    """Dilation d as d**rank interleaved sub-images stacked on the batch axis, each convolved
    densely (TensorFlow's atrous conv; nncase's SpaceToBatch + conv + BatchToSpace): no MACs on
    zeros, at the price of a batch d**rank times larger and a few layout ops."""
    if any(s != 1 for s in spec.strides):
        return "space-to-batch handles stride-1 dilated convs"
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return "space-to-batch needs a static input size"
    dense = plan_dilation(spec, target)
    if isinstance(dense, str):
        return dense
    rank = spec.rank
    rate = tuple(d // keep for d, keep in zip(spec.dilations, dense.dilations))
    batch = (spec.input_shape[0] or 1) * math.prod(rate)
    if target.conv.max_batch is not None and batch > target.conv.max_batch:
        return f"space-to-batch makes a batch of {batch}; the engine takes {target.conv.max_batch}"
    blocks, begins, ends, lengths = [], [], [], []
    for i in range(rank):
        size, k, keep = spec.input_shape[2 + i], spec.kernel_shape[i], dense.dilations[i]
        out = size + pads[i] + pads[i + rank] - (k - 1) * spec.dilations[i]
        m = -(-out // rate[i]) + (k - 1) * keep
        blocks.append(m)
        low = _size_floor(target, rank, i)
        if low is not None and m < low:
            return (f"space-to-batch sub-images of {m} are below the engine's minimum input "
                    f"size {low}")
        begins.append(pads[i])
        ends.append(m * rate[i] - size - pads[i])
        lengths.append(out)
    return SpaceToBatchPlan(rate, dense.dilations, tuple(blocks), tuple(begins + ends),
                            tuple(lengths))


@dataclass(frozen=True)
class TilePlan:
    axes: tuple[int, ...]                               # spatial axes that are tiled
    tiles: tuple[tuple[tuple[int, int], ...], ...]      # per tiled axis: output ranges
    pads: tuple[int, ...]                               # explicit Pad for the tiled axes
    grow: tuple[int, ...] = ()                          # zeros appended to undersized axes
    out_length: tuple[int, ...] = ()                    # the original output extents


def plan_tiles(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> TilePlan | str:
    """Feature maps larger than the engine takes: cut the output into tiles whose input windows
    (with the kernel's halo) fit, as equal as possible. Maps smaller than it takes (a 1x1
    squeeze-excite map on the K210's 4-pixel minimum) get zeros appended and the extra outputs
    cropped. Exact either way: every kept output reads the same inputs."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return "tiling needs a static input size"
    rank = spec.rank
    limits = {rank - 2: target.conv.input_height, rank - 1: target.conv.input_width}
    axes, tiles, grow = [], [], [0] * rank
    for axis in range(rank):
        bounds = limits.get(axis)
        size = spec.input_shape[2 + axis]
        if bounds is not None and size < bounds[0]:
            grow[axis] = bounds[0] - size       # zeros after the end change no kept output
            continue
        if bounds is None or size <= bounds[1]:
            continue
        span, stride = spec.dilated_kernel[axis], spec.strides[axis]
        padded = size + pads[axis] + pads[axis + rank]
        out = (padded - span) // stride + 1
        per_tile = (bounds[1] - span) // stride + 1
        if per_tile < 1:
            return f"a {span}-wide kernel window does not fit the engine's {bounds[1]} input"
        count = -(-out // per_tile)
        ranges = _ranges([out // count + (1 if i < out % count else 0) for i in range(count)])
        smallest = min(b - a for a, b in ranges)
        if (smallest - 1) * stride + span < bounds[0]:
            return f"tiles would fall below the engine's minimum input {bounds[0]}"
        axes.append(axis)
        tiles.append(tuple(ranges))
    if not axes and not any(grow):
        return "feature map already within the limits"
    explicit = [0] * (2 * rank)
    for axis in axes:
        explicit[axis], explicit[axis + rank] = pads[axis], pads[axis + rank]
    out_length = tuple(d for d in (spec.output_shape or ())[2:])
    if any(grow) and (len(out_length) != rank or None in out_length):
        return "growing an undersized map needs a static output size"
    return TilePlan(tuple(axes), tuple(tiles), tuple(explicit), tuple(grow), out_length)


@dataclass(frozen=True)
class SpaceToDepthPlan:
    block: int                         # the stride, folded into channels
    kernel: tuple[int, ...]            # ceil(k / s) per axis
    pads: tuple[int, ...]              # explicit Pad (begins, ends); ends may be negative: crop
    cost: float                        # over the original's MACs, kernel legalisation included
    subsample_cost: float              # what the stride-1-then-subsample form would cost


def plan_space_to_depth(spec: ConvSpec, target: Target,
                        pads: tuple[int, ...]) -> SpaceToDepthPlan | str:
    """A stride-s conv as SpaceToDepth(s) then a stride-1 conv with ceil(k/s) taps over s*s
    times the channels (Vela's fixup_strided_conv folds strides the same way). Against running
    at stride 1 and subsampling (s*s times the MACs), it pays s*s*ceil(k/s)**2/k**2 MACs plus
    one pass over the input; when the engine cannot run the smaller kernel, the cost of the
    kernel split that follows is included."""
    if spec.rank != 2 or len(set(spec.strides)) != 1 or spec.strides[0] == 1:
        return "space-to-depth folds equal 2-D strides"
    if spec.groups != 1 or any(d != 1 for d in spec.dilations):
        return "space-to-depth takes ungrouped, undilated convs"
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]) or not spec.macs:
        return "space-to-depth needs a static input size"
    s = spec.strides[0]
    kernel = tuple(-(-k // s) for k in spec.kernel_shape)
    ends = []
    for axis in range(2):
        size, k = spec.input_shape[2 + axis], spec.kernel_shape[axis]
        out = (size + pads[axis] + pads[axis + 2] - k) // s + 1
        ends.append((out + kernel[axis] - 1) * s - size - pads[axis])
    folded = replace(spec, in_channels=spec.in_channels * s * s, kernel_shape=kernel,
                     strides=(1, 1), pads=(0,) * 4, auto_pad="NOTSET")
    legal = plan_kernel_split(folded, target)
    taps = math.prod(kernel)
    if not isinstance(legal, str):
        taps = math.prod(legal.padded_kernel)
    moved = (spec.input_shape[0] or 1) * spec.in_channels * math.prod(spec.input_shape[2:])
    cost = s * s * taps / math.prod(spec.kernel_shape) + \
        LAYOUT_ELEMENT_COST_IN_MACS * moved / spec.macs
    subsample = s * s * _kernel_factor(spec, target)
    return SpaceToDepthPlan(s, kernel, (pads[0], pads[1], *ends), cost, subsample)


def _kernel_factor(spec: ConvSpec, target: Target) -> float:
    """How many more taps the kernel split will compute for this conv on this target."""
    legal = plan_kernel_split(replace(spec, strides=(1,) * spec.rank), target)
    if isinstance(legal, str):
        return 1.0
    return math.prod(legal.padded_kernel) / math.prod(spec.kernel_shape)


# What one more conv node costs, in MACs: the per-node dispatch measured in the ResNet-50 split
# profile (benchmarks/split_overhead.py): ~10 us per sub-conv at ~100 GMAC/s on this CPU.
NODE_COST_IN_MACS = 1_000_000
COSTING_PIXELS = 32 * 32     # a map of unknown size is costed as 32x32 (and the record says so)
# A plain 4-D copy (Split, Slice, Concat, Pad, Gather) on onnxruntime CPU: ~0.12 ns per element
# written after ~2 us per node, against ~0.01 ns per dense-conv MAC (benchmarks/variants.py
# prints what these come from). 6-D layout transposes cost far more: LAYOUT_ELEMENT_COST_IN_MACS.
COPY_ELEMENT_COST_IN_MACS = 12
COPY_NODE_COST_IN_MACS = 200_000


# onnxruntime's conv is im2col + GEMM: with a GEMM depth K (input channels x taps) below ~256
# (k x k) or ~32 (1x1, no im2col) each MAC costs about that depth / K times more (measured on
# grouped-conv lowerings of 4..64 channels per group, benchmarks/variants.py).
FULL_GEMM_DEPTH_KXK = 256
FULL_GEMM_DEPTH_1X1 = 32


def shallow_gemm_penalty(depth: int, kernel: tuple[int, ...]) -> float:
    full = FULL_GEMM_DEPTH_1X1 if math.prod(kernel) == 1 else FULL_GEMM_DEPTH_KXK
    return max(1.0, full / max(depth, 1))


def plan_group_lowering(spec: ConvSpec, target: Target,
                        groups_per_conv: int | None = None) -> ChannelSplitPlan | str:
    """A grouped or depthwise conv on an engine without that form: chunks of c groups, each one
    dense conv whose weight is block-diagonal (c = 1: a plain conv per group). c is chosen by
    cost: MACs grow c times, while every extra node costs NODE_COST_IN_MACS, cutting the input
    and joining the outputs copies both once, and a conv whose GEMM depth (input channels x
    taps) is shallow runs its MACs slower (``shallow_gemm_penalty``)."""
    if spec.group_form in target.conv.groups:
        return f"{spec.group_form} convs run natively"
    if "regular" not in target.conv.groups:
        return "the engine runs no regular convs to lower to"
    if spec.in_channels % spec.groups or spec.out_channels % spec.groups:
        return f"channels are not divisible by groups={spec.groups}"
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
    strategy = f"{form} (cost x{cost / macs:.1f}" + \
        (f"; rejected {rejected}" if rejected else "") + ")"
    return ChannelSplitPlan(blocks, target.rewrite.accumulate, strategy)


@dataclass(frozen=True)
class TrimPlan:
    taps: tuple[tuple[int, int], ...]  # per axis: first and last kernel tap that sees data
    pads: tuple[int, ...]              # the trimmed conv's pads

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(b - a + 1 for a, b in self.taps)


def plan_dead_taps(spec: ConvSpec, pads: tuple[int, ...]) -> TrimPlan | str:
    """Kernel taps that only ever read padding add nothing: drop them. A DeepLab ASPP conv with
    dilation 36 on an 8x8 map is, exactly, a 1x1 conv - no dilation, kernel or padding left to
    lower."""
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return "finding taps that only see padding needs a static input size"
    rank, taps, new_pads = spec.rank, [], list(pads)
    for axis in range(rank):
        size, k = spec.input_shape[2 + axis], spec.kernel_shape[axis]
        d, s = spec.dilations[axis], spec.strides[axis]
        begin, end = pads[axis], pads[axis + rank]
        count = (size + begin + end - (k - 1) * d - 1) // s + 1
        live = [t for t in range(k)
                if any(0 <= o * s + t * d - begin < size for o in range(count))]
        if not live:
            return "every tap reads padding only"
        first, last = live[0], live[-1]
        trimmed_begin, trimmed_end = begin - first * d, end - (k - 1 - last) * d
        if trimmed_begin < 0 or trimmed_end < 0:
            first, last, trimmed_begin, trimmed_end = 0, k - 1, begin, end
        taps.append((first, last))
        new_pads[axis], new_pads[axis + rank] = trimmed_begin, trimmed_end
    if all(a == 0 and b == k - 1 for (a, b), k in zip(taps, spec.kernel_shape)):
        return "no kernel tap reads only padding"
    return TrimPlan(tuple(taps), tuple(new_pads))


@dataclass(frozen=True)
class RankPlan:
    form: str            # lift (1-D as 2-D, H = 1) | depth_batch (3-D: depth frames on the batch
    #                      axis, one 2-D conv per depth tap) | per_frame (3-D: a 2-D conv per
    #                      output frame and depth tap, for engines that take batch 1)
    out_depth: int = 0   # 3-D: output frames
    strategy: str = ""


def plan_rank_lowering(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> RankPlan | str:
    """A conv of a rank the engine lacks, as 2-D convs: a 1-D conv is a 2-D conv over a map one
    row high; a 3-D conv is, per depth tap, a 2-D conv over depth frames, summed."""
    ranks = target.conv.spatial_ranks
    if 2 not in ranks:
        return f"the engine runs no 2-D convs to lower {spec.rank}-D convs to"
    if spec.rank == 1:
        return RankPlan("lift", strategy="1-D conv as a 2-D conv over a 1-row map")
    if spec.rank != 3:
        return f"no lowering from {spec.rank}-D to 2-D"
    if spec.transposed:
        return "3-D ConvTranspose is not lowered to 2-D"
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return "a 3-D conv needs static depth, height and width to become 2-D convs"
    depth, kd, sd, dd = spec.input_shape[2], spec.kernel_shape[0], spec.strides[0], \
        spec.dilations[0]
    out_depth = (depth + pads[0] + pads[3] - (kd - 1) * dd - 1) // sd + 1
    batch = spec.input_shape[0]
    limit = target.conv.max_batch
    batch_ok = limit is None or (batch is not None and batch * out_depth <= limit)
    if batch_ok and target.allows_op("Slice") and target.allows_op("Transpose"):
        return RankPlan("depth_batch", out_depth,
                        f"3-D conv as {kd} 2-D convs over {out_depth} depth frames on the batch "
                        f"axis, summed")
    nodes = out_depth * kd
    if nodes > MAX_LOWERED_NODES:
        return f"{nodes} per-frame 2-D convs would exceed {MAX_LOWERED_NODES} nodes"
    why = "Slice or Transpose is not in the target's ops" if batch_ok else \
        f"the engine's batch limit {limit} rules out frames on the batch axis"
    return RankPlan("per_frame", out_depth,
                    f"3-D conv as 2-D convs per output frame and depth tap ({nodes} convs; {why})")
