"""Feature maps larger than the engine takes (the K210 reads at most 256 rows and 512 columns;
Ethos-U's Vela 3 no axis over 65535, a 1-D audio conv over 70,000 samples):
the output is cut into tiles, each computed by the same conv from its input window (the tile's
rows plus the kernel's halo), and the tiles are concatenated back. Seamless and exact.

The windows are Slices where the target has Slice; where it has not (NVDLA), one Split per axis at
every tile and halo boundary, each overlapping window the Concat of the chunks it covers
(``plan.windows``); where it has no Pad either, the edge tiles' convs keep the conv's own pads.
An integer conv (QLinearConv, ConvInteger) stays one: each tile is the same op on its window, its
padding its input zero point (what the conv pads with)."""

from __future__ import annotations

import itertools

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..rules import Violation
from ..plan.tiling import plan_tiles
from ..record import Record
from ..decline import need
from .protocol import Pass, RewriteContext, register_pass
from .emit import (INT64_MAX, builder, conv_copy, pad_spatial, pad_value, replace, slice_spatial,
                   variable)
from .geometry_common import explicit_pads
from ..build.windows import cut_windows


@register_pass
class SpatialTiling(Pass):
    name = "tiling"
    fixes = frozenset({"input_height", "input_width", "max_dim"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        pads = need(explicit_pads(node, spec))
        plan = need(plan_tiles(spec, ctx.target, pads))
        if any(plan.grow):
            self.require_ops(ctx, ["Slice", "Concat", "Pad"])
            return self._grow(node, spec, violations, plan, ctx)
        self.require_ops(ctx, plan.ops)
        rank, base, y = spec.rank, node.name, node.outputs[0]
        added: list[gs.Node] = []
        x = pad_spatial(ctx, node.inputs[0], list(plan.pads[:rank]), list(plan.pads[rank:]),
                        f"{base}/tile_pad", added, value=pad_value(node))
        windows = None if plan.form == "slice" else _split_windows(ctx, x, plan, base, added)
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
                window = slice_spatial(ctx, x, starts, ends, [1] * rank,
                                       f"{base}/tile{tag}/window", added)
            outputs[combo] = conv_copy(ctx, node, ctx.fresh(f"{base}/tile{tag}"),
                                       [window, *node.inputs[1:]], added, pads=conv_pads)
        _concat_tiles(ctx, plan, outputs, base, y, added)
        sizes = " x ".join(f"{len(t)} tiles on axis {2 + a}" for a, t in zip(plan.axes, plan.tiles))
        how = f"{sizes} (halo {spec.dilated_kernel})" + _FORMS[plan.form] + \
            (", the edge tiles keep the conv's pads (the target has no Pad)"
             if any(any(p) for kept in plan.tile_pads for p in kept) else "")
        record = self.record(node, spec, violations, how, added, tolerance="exact")
        replace(node, ctx, added)
        return record

    def _grow(self, node: gs.Node, spec: ConvSpec, violations: list[Violation], plan,
              ctx: RewriteContext) -> Record:
        rank, base, y = spec.rank, node.name, node.outputs[0]
        added: list[gs.Node] = []
        x = pad_spatial(ctx, node.inputs[0], [0] * rank, list(plan.grow), f"{base}/grow", added,
                        value=pad_value(node))
        out = conv_copy(ctx, node, ctx.fresh(f"{base}/conv"), [x, *node.inputs[1:]], added)
        slice_spatial(ctx, out, [0] * rank, list(plan.out_length), [1] * rank, f"{base}/crop",
                      added, out=y)
        how = f"input grown by {list(plan.grow)} zeros to the engine's minimum, output cropped"
        record = self.record(node, spec, violations, how, added, tolerance="exact")
        replace(node, ctx, added)
        return record


_FORMS = {"slice": "",
          "split": ", cut by Split (the target has no Slice; the windows do not overlap)",
          "split_concat": ", cut by Split and joined with their neighbours' halos by Concat "
                          "(the target has no Slice)"}


def _split_windows(ctx: RewriteContext, x: gs.Tensor, plan, base: str,
                   added: list[gs.Node]) -> dict:
    """Each tile's input window, cut by one Split per tiled axis (nested: the windows of the
    first axis are split along the next), keyed by the tiles' index per axis."""
    def stem(depth: int, prefix: tuple) -> str:
        tag = "".join(f".{plan.tiles[d][i][0]}" for d, i in enumerate(prefix))
        return f"{base}/tile_split{depth}{tag}"
    return cut_windows(builder(ctx, added), x, [2 + a for a in plan.axes], list(plan.cuts), stem)


def _concat_tiles(ctx: RewriteContext, plan, outputs: dict, base: str, y: gs.Tensor,
                  added: list[gs.Node]) -> None:
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
            out = y if depth == 0 else variable(ctx, f"{base}/tiles_concat.out", y)
            added.append(gs.Node("Concat", ctx.fresh(f"{base}/tiles_concat"), {"axis": axis},
                                 [t for _, t in parts], [out]))
            level[prefix] = out
