"""Feature maps larger than the engine takes (the K210 reads at most 256 rows and 512 columns;
Ethos-U's Vela 3 no axis over 65535, a 1-D audio conv over 70,000 samples):
the output is cut into tiles, each computed by the same conv from its input window (the tile's
rows plus the kernel's halo), and the tiles are concatenated back. Seamless and exact. Maps
smaller than the engine's minimum get zeros appended and the extra outputs cropped.

The windows are Slices where the target has Slice; where it has not (NVDLA), one Split per axis at
every tile and halo boundary, each overlapping window the Concat of the chunks it covers
(``plan.windows``); where it has no Pad either, the edge tiles' convs keep the conv's own pads.
An integer conv (QLinearConv, ConvInteger) stays one: each tile is the same op on its window, its
padding its input zero point (what the conv pads with)."""

from __future__ import annotations

import itertools

from ..build.builder import Builder, ConvSite
from ..build.onnx_read import INT64_MAX
from ..build.windows import cut_windows
from ..conv import ConvSpec
from ..decline import Decline
from ..plan.padding import with_explicit_pads
from ..plan.tiling import TilePlan, plan_tiles
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, missing_ops, register

_FORMS = {"slice": "",
          "split": ", cut by Split (the target has no Slice; the windows do not overlap)",
          "split_concat": ", cut by Split and joined with their neighbours' halos by Concat "
                          "(the target has no Slice)"}


@register
class SpatialTiling(Lowering):
    name = "tiling"
    fixes = rules_named("input_height", "input_width", "max_dim")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        found = with_explicit_pads(spec, target, plan_tiles)
        if isinstance(found, Decline):
            return found
        plan, pads = found
        if any(plan.grow):
            missing = missing_ops(target, ["Slice", "Concat", "Pad"])
            how = (f"input grown by {list(plan.grow)} zeros to the engine's minimum, output "
                   "cropped")
        else:
            missing = missing_ops(target, plan.ops)
            sizes = " x ".join(f"{len(t)} tiles on axis {2 + a}"
                               for a, t in zip(plan.axes, plan.tiles))
            how = f"{sizes} (halo {spec.dilated_kernel})" + _FORMS[plan.form] + \
                (", the edge tiles keep the conv's pads (the target has no Pad)"
                 if any(any(p) for kept in plan.tile_pads for p in kept) else "")
        if missing:
            return missing
        return Planned((plan, pads), how, "exact")

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        plan, pads = planned.detail
        if any(plan.grow):
            return _grow(b, site, plan)
        return _tiles(b, site, plan, pads)


def _tiles(b: Builder, site: ConvSite, plan: TilePlan, pads: tuple[int, ...]):
    rank, base = site.spec.rank, site.name
    x = b.pad_spatial(site.x, list(plan.pads[:rank]), list(plan.pads[rank:]), f"{base}/tile_pad",
                      value=site.pad_value)
    windows = None if plan.form == "slice" else cut_windows(
        b, x, [2 + a for a in plan.axes], list(plan.cuts),
        lambda depth, prefix: f"{base}/tile_split{depth}" + "".join(
            f".{plan.tiles[d][i][0]}" for d, i in enumerate(prefix)))
    outputs = {}
    for index in itertools.product(*(range(len(t)) for t in plan.tiles)):
        combo = tuple(plan.tiles[d][i] for d, i in enumerate(index))
        tag = ".".join(str(a) for a, _ in combo)
        conv_pads = list(pads)
        for depth, (axis, i) in enumerate(zip(plan.axes, index)):
            conv_pads[axis], conv_pads[axis + rank] = plan.tile_pads[depth][i]
        if windows is not None:
            window = windows[index]
        else:
            starts, ends = [0] * rank, [INT64_MAX] * rank
            for depth, (axis, i) in enumerate(zip(plan.axes, index)):
                starts[axis], ends[axis] = plan.windows[depth][i]
            window = b.slice_axes(x, list(range(2, 2 + rank)), starts, ends, [1] * rank,
                                  f"{base}/tile{tag}/window")
        outputs[combo] = b.conv(site, site.operands(window), b.fresh(f"{base}/tile{tag}"),
                                site.conv_attrs(pads=conv_pads))
    return _concat_tiles(b, site, plan, outputs)


def _concat_tiles(b: Builder, site: ConvSite, plan: TilePlan, outputs: dict):
    """Concatenate along the last tiled axis first, then outwards; the outermost writes y."""
    level = outputs
    for depth in range(len(plan.axes) - 1, -1, -1):
        axis = 2 + plan.axes[depth]
        grouped: dict = {}
        for combo, tensor in level.items():
            grouped.setdefault(combo[:depth], []).append((combo[depth], tensor))
        level = {}
        for prefix, parts in grouped.items():
            parts.sort(key=lambda p: p[0])
            level[prefix] = b.concat([t for _, t in parts], axis, f"{site.name}/tiles_concat",
                                     out=site.y if depth == 0 else None)
    return level[()]


def _grow(b: Builder, site: ConvSite, plan: TilePlan):
    rank, base = site.spec.rank, site.name
    x = b.pad_spatial(site.x, [0] * rank, list(plan.grow), f"{base}/grow", value=site.pad_value)
    out = b.conv(site, site.operands(x), b.fresh(f"{base}/conv"), site.conv_attrs())
    return b.slice_axes(out, list(range(2, 2 + rank)), [0] * rank, list(plan.out_length),
                        [1] * rank, f"{base}/crop", out=site.y)
