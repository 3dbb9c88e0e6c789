"""Convs of a rank the engine lacks, as 2-D convs (``plan.rank.plan_rank_lowering``):

- 1-D: Reshape [N, C, L] -> [N, C, 1, L], a 2-D conv with kernel 1 x k, Reshape back. Exact.
- 3-D, depth on the batch axis: view the input as 4-D [N, C, D, H*W], pad the depth, move it
  next to the batch, and per depth tap kt slice the frames that tap reads, fold them into the
  batch and run the tap's 2-D kernel; sum the taps, unfold. Reassociating (taps summed in
  another order).
- 3-D, per frame (engines that take batch 1): the same sum per output frame, frames joined
  with Concat on the depth axis of the 4-D view; a static batch over the engine's is cut into
  chunks it takes first (Split or Slice, which read any batch), each lowered on its own and the
  chunks joined by Concat, so that no op inside reads a larger batch.

Only the interface Reshapes touch 5-D tensors; the tidy step's view sinking
(``passes.view_sinking``) moves the 4 -> 5-D one on past layout-blind ops, so that between two
lowered 3-D convs nothing 5-D is left for a rank-4 engine.

A weight known only at run time is reshaped in the graph (1-D: a Reshape to [O, I, 1, k]) or
cut into its depth taps there (3-D, ``Builder.weight_taps``), with the ops the form already runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..build.builder import Builder, ConvSite
from ..conv import INTEGER_CONVS, ConvSpec
from ..decline import Decline
from ..plan.padding import with_explicit_pads
from ..plan.rank import RankPlan, plan_rank_lowering
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, missing_ops, register


@dataclass(frozen=True)
class RankEmit:
    plan: RankPlan
    pads: tuple[int, ...]
    use_split: bool             # frames and a computed weight's taps cut by Split (else Slice)
    accumulate: str             # the order of the depth taps' sum (``rewrite.accumulate``)


@register
class RankLowering(Lowering):
    name = "rank"
    fixes = rules_named("spatial_ranks")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        if spec.transposed and spec.rank == 1:
            if spec.auto_pad not in ("NOTSET", "") or spec.output_size is not None:
                return Decline("a 1-D ConvTranspose with auto_pad or output_shape: resolve first")
            found = plan_rank_lowering(spec, target, spec.pads)
            found = found if isinstance(found, Decline) else (found, spec.pads)
        else:
            found = with_explicit_pads(spec, target, plan_rank_lowering)
        if isinstance(found, Decline):
            return found
        plan, pads = found
        if spec.op_type in INTEGER_CONVS and plan.form != "lift":
            return Decline(f"a 3-D {spec.op_type}'s depth taps would be summed: not built for "
                           "integer convs (only the 1-D lift)")
        if plan.form == "lift":
            missing = missing_ops(target, ["Reshape"])
            use_split, tolerance = False, "exact"
        else:
            use_split = plan.form != "depth_batch" and target.allows_op("Split")
            missing = missing_ops(target, ["Split" if use_split else "Slice", "Reshape", "Add"] + (
                ["Transpose"] if plan.form == "depth_batch" else ["Concat"])
                + (["Pad"] if pads[0] or pads[3] else []))
            tolerance = "reassociating"
        if missing:
            return missing
        return Planned(RankEmit(plan, tuple(pads), use_split, target.rewrite.accumulate),
                       plan.strategy, tolerance)

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        if planned.detail.plan.form == "lift":
            return _lift(b, site, planned.detail.pads)
        return _depth(b, site, planned.detail)


def _lift(b: Builder, site: ConvSite, pads: tuple[int, ...]):
    spec, base = site.spec, site.name
    rows = b.reshape(site.x, [0, 0, 1, -1], f"{base}/to_2d", f"{base}/shape_2d")
    k = spec.kernel_shape[0]
    w2 = b.weight(site.weight.reshaped((*spec.weight_shape[:2], 1, k)), (slice(None),),
                  b.fresh(f"{base}/w2d"))
    changes = {"kernel_shape": [1, k], "strides": [1, spec.strides[0]],
               "dilations": [1, spec.dilations[0]], "pads": [0, pads[0], 0, pads[1]]}
    if spec.output_padding:
        changes["output_padding"] = [0, spec.output_padding[0]]
    out2 = b.conv(site, site.operands(rows, w2), b.fresh(f"{base}/conv2d"),
                  site.conv_attrs(**changes))
    return b.reshape(out2, [0, 0, -1], f"{base}/to_1d", f"{base}/shape_1d", out=site.y)


def _depth(b: Builder, site: ConvSite, emit: RankEmit):
    """Every tensor between the interface Reshapes is 4-D (depth and the flattened map on the
    last two axes), so a target of rank 4 runs all of it; only the conv's own input and output
    stay 5-D. A weight known only at run time is cut into its depth taps in the graph, by the op
    that cuts the frames."""
    spec, plan, pads, base = site.spec, emit.plan, emit.pads, site.name
    kd, sd, dd = spec.kernel_shape[0], spec.strides[0], spec.dilations[0]
    channels, (depth, height, width) = spec.in_channels, spec.input_shape[2:]
    out_hw = [(n + pads[1 + i] + pads[4 + i] - (k - 1) * d - 1) // s + 1
              for i, (n, k, s, d) in enumerate(zip((height, width), spec.kernel_shape[1:],
                                                   spec.strides[1:], spec.dilations[1:]))]
    attrs = site.conv_attrs(kernel_shape=list(spec.kernel_shape[1:]),
                            strides=list(spec.strides[1:]), dilations=list(spec.dilations[1:]),
                            pads=[pads[1], pads[2], pads[4], pads[5]])
    cout, out_map = spec.out_channels, out_hw[0] * out_hw[1]
    volume = b.reshape(site.x, [0, channels, depth, height * width], f"{base}/to_4d",
                       f"{base}/shape_4d")

    def pad_depth(x, stem: str):
        """The depth padding; height and width pads stay in the 2-D convs."""
        return b.pad_spatial(x, [pads[0], 0], [pads[3], 0], f"{stem}/pad_depth")

    chunks = plan.batch_chunks
    if not chunks:
        volume = pad_depth(volume, base)
    taps = b.weight_taps(site.weight, [b.fresh(f"{base}/w_tap{t}") for t in range(kd)],
                         emit.use_split)

    def conv(x, t: int, stem: str):
        bias = [b.bias(site, 0, cout, stem)] if site.bias is not None and t == 0 else []
        return b.conv(site, [x, taps[t], *bias], b.fresh(f"{stem}/conv"), attrs)

    def per_frame(volume, stem: str):
        """The sum per output frame, frames joined on axis 2 of the 4-D [N, Cout, Dout,
        Ho*Wo] view."""
        padded_depth = depth + pads[0] + pads[3]
        split = b.split_axis(volume, 2, [(f, f + 1) for f in range(padded_depth)],
                             f"{stem}/split_frames", True, f"{stem}/frame") \
            if emit.use_split else None
        flat_frames: dict = {}

        def frame_2d(f: int):
            if f not in flat_frames:
                picked = split[f] if split is not None else b.slice_axes(
                    volume, [2], [f], [f + 1], [1], f"{stem}/frame{f}")
                flat_frames[f] = b.reshape(picked, [0, channels, height, width],
                                           f"{stem}/frame{f}/squeeze", f"{stem}/frame{f}/shape")
            return flat_frames[f]

        outputs = []
        for o in range(plan.out_depth):
            partial = [conv(frame_2d(o * sd + t * dd), t, f"{stem}/f{o}t{t}") for t in range(kd)]
            total = b.sum(partial, emit.accumulate, f"{stem}/f{o}/sum")
            outputs.append(b.reshape(total, [0, cout, 1, out_map], f"{stem}/f{o}/as_row",
                                     f"{stem}/f{o}/row_shape"))
        return b.concat(outputs, 2, f"{stem}/frames")

    if plan.form == "depth_batch":
        frames = b.transpose(volume, [0, 2, 1, 3], f"{base}/depth_first")
        partial = []
        for t in range(kd):
            start = t * dd
            window = b.slice_axes(frames, [1], [start], [start + (plan.out_depth - 1) * sd + 1],
                                  [sd], f"{base}/tap{t}")
            flat = b.reshape(window, [-1, channels, height, width], f"{base}/tap{t}/fold",
                             f"{base}/tap{t}/fold_shape")
            partial.append(conv(flat, t, f"{base}/tap{t}"))
        total = b.sum(partial, emit.accumulate, f"{base}/sum")
        unfolded = b.reshape(total, [-1, plan.out_depth, cout, out_map], f"{base}/unfold",
                             f"{base}/unfold_shape")
        joined = b.transpose(unfolded, [0, 2, 1, 3], f"{base}/depth_back")
    elif not chunks:
        joined = per_frame(volume, base)
    else:       # a batch over the engine's: each chunk on its own, joined on the batch axis
        parts = b.split_axis(volume, 0, list(chunks), f"{base}/batch_split", emit.use_split,
                             f"{base}/batch")
        joined = b.concat([per_frame(pad_depth(part, f"{base}/b{i}"), f"{base}/b{i}")
                           for i, part in enumerate(parts)], 0, f"{base}/batch_concat")
    return b.reshape(joined, [0, cout, plan.out_depth, *out_hw], f"{base}/to_5d",
                     f"{base}/shape_5d", out=site.y)
