"""Convs of a rank the engine lacks, as 2-D convs (``plan.rank.plan_rank_lowering``):

- 1-D: Reshape [N, C, L] -> [N, C, 1, L], a 2-D conv with kernel 1 x k, Reshape back. Exact.
- 3-D, depth on the batch axis: view the input as 4-D [N, C, D, H*W], pad the depth, move it
  next to the batch, and per depth tap kt slice the frames that tap reads, fold them into the
  batch and run the tap's 2-D kernel; sum the taps, unfold. Reassociating (taps summed in
  another order).
- 3-D, per frame (engines that take batch 1): the same sum per output frame, frames joined
  with Concat on the depth axis of the 4-D view.

Only the interface Reshapes touch 5-D tensors; the tidy step's view sinking
(``passes.view_sinking``) moves the 4 -> 5-D one on past layout-blind ops, so that between two
lowered 3-D convs nothing 5-D is left for a rank-4 engine.

A weight known only at run time (``build.onnx_read.RuntimeWeight``) is reshaped in the graph
(1-D: a Reshape to [O, I, 1, k]) or cut into its depth taps there (3-D), with the ops the form
already runs.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..build.onnx_read import conv_inputs
from ..conv import INTEGER_CONVS, ConvSpec
from ..rules import Violation
from ..plan.rank import RankPlan, plan_rank_lowering
from ..record import Record
from ..decline import Declined, need
from .protocol import Pass, RewriteContext, register_pass
from .emit import conv_copy, int64s, pad_spatial, replace, slice_axes, sum_terms, variable
from .geometry_common import explicit_pads


@register_pass
class RankLowering(Pass):
    name = "rank"
    fixes = frozenset({"spatial_ranks"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        if node.op == "ConvTranspose" and spec.rank == 1:
            if spec.auto_pad not in ("NOTSET", "") or "output_shape" in node.attrs:
                raise Declined("a 1-D ConvTranspose with auto_pad or output_shape: resolve first")
            pads = spec.pads
        else:
            pads = need(explicit_pads(node, spec))
        plan = need(plan_rank_lowering(spec, ctx.target, pads))
        if node.op in INTEGER_CONVS and plan.form != "lift":
            raise Declined(f"a 3-D {node.op}'s depth taps would be summed: not built for integer "
                           "convs (only the 1-D lift)")
        weight = self.weight(node, ctx.opset)
        added: list[gs.Node] = []
        if plan.form == "lift":
            self.require_ops(ctx, ["Reshape"])
            self._lift(node, spec, pads, weight, ctx, added)
            tolerance = "exact"
        else:
            cut = "Slice" if plan.form == "depth_batch" or not ctx.target.allows_op("Split") \
                else "Split"
            self.require_ops(ctx, [cut, "Reshape", "Add"] + (
                ["Transpose"] if plan.form == "depth_batch" else ["Concat"])
                + (["Pad"] if pads[0] or pads[3] else []))
            self._depth(node, spec, pads, plan, weight, ctx, added, use_split=cut == "Split")
            tolerance = "reassociating"
        record = self.record(node, spec, violations, plan.strategy, added, tolerance=tolerance)
        replace(node, ctx, added)
        return record

    def _lift(self, node, spec, pads, weight, ctx, added) -> None:
        x, y, base = node.inputs[0], node.outputs[0], node.name
        rows = variable(ctx, f"{base}/as_2d", x, None if x.shape is None else
                        [*x.shape[:2], 1, x.shape[2]])
        added.append(gs.Node("Reshape", ctx.fresh(f"{base}/to_2d"), {},
                             [x, int64s(ctx, f"{base}/shape_2d", [0, 0, 1, -1])], [rows]))
        w2, dq = weight.reshaped((*spec.weight_shape[:2], 1, spec.kernel_shape[0])).slice(
            ctx.fresh(f"{base}/w2d"), (slice(None),))
        added += dq
        attrs = {"kernel_shape": [1, spec.kernel_shape[0]], "strides": [1, spec.strides[0]],
                 "dilations": [1, spec.dilations[0]], "pads": [0, pads[0], 0, pads[1]]}
        if spec.output_padding:
            attrs["output_padding"] = [0, spec.output_padding[0]]
        node.attrs.pop("auto_pad", None)
        out2 = conv_copy(ctx, node, ctx.fresh(f"{base}/conv2d"), conv_inputs(node, rows, w2),
                         added, **attrs)
        added.append(gs.Node("Reshape", ctx.fresh(f"{base}/to_1d"), {},
                             [out2, int64s(ctx, f"{base}/shape_1d", [0, 0, -1])], [y]))

    def _depth(self, node, spec, pads, plan: RankPlan, weight, ctx, added,
               use_split: bool) -> None:
        """Every tensor between the interface Reshapes is 4-D (depth and the flattened map on
        the last two axes), so a target of rank 4 runs all of it; only the conv's own input
        and output stay 5-D. A weight known only at run time is cut into its depth taps in the
        graph, by the op that cuts the frames (``kernel_taps``)."""
        x, y, base = node.inputs[0], node.outputs[0], node.name
        kd, sd, dd = spec.kernel_shape[0], spec.strides[0], spec.dilations[0]
        channels, (depth, height, width) = spec.in_channels, spec.input_shape[2:]
        out_hw = [(n + pads[1 + i] + pads[4 + i] - (k - 1) * d - 1) // s + 1
                  for i, (n, k, s, d) in enumerate(zip((height, width), spec.kernel_shape[1:],
                                                       spec.strides[1:], spec.dilations[1:]))]
        attrs = {"kernel_shape": list(spec.kernel_shape[1:]), "strides": list(spec.strides[1:]),
                 "dilations": list(spec.dilations[1:]),
                 "pads": [pads[1], pads[2], pads[4], pads[5]]}
        node.attrs.pop("auto_pad", None)
        cout, out_map = spec.out_channels, out_hw[0] * out_hw[1]
        volume = variable(ctx, f"{base}/as_4d", x)
        added.append(gs.Node("Reshape", ctx.fresh(f"{base}/to_4d"), {},
                             [x, int64s(ctx, f"{base}/shape_4d",
                                        [0, channels, depth, height * width])], [volume]))
        if pads[0] or pads[3]:     # depth padding; height and width pads stay in the 2-D convs
            volume = pad_spatial(ctx, volume, [pads[0], 0], [pads[3], 0], f"{base}/pad_depth",
                                 added)
        taps = weight.kernel_taps([ctx.fresh(f"{base}/w_tap{t}") for t in range(kd)], use_split)
        for _, dq in taps:
            added += dq
        bias = [t for t in node.inputs[2:3] if t.name]
        if plan.form == "depth_batch":
            frames = variable(ctx, f"{base}/frames", x)
            added.append(gs.Node("Transpose", ctx.fresh(f"{base}/depth_first"),
                                 {"perm": [0, 2, 1, 3]}, [volume], [frames]))
            partial = []
            for t, (w, _) in enumerate(taps):
                start = t * dd
                stop = start + (plan.out_depth - 1) * sd + 1
                window = slice_axes(ctx, frames, [1], [start], [stop], [sd], f"{base}/tap{t}",
                                    added)
                flat = variable(ctx, f"{base}/tap{t}/batch", x)
                added.append(gs.Node("Reshape", ctx.fresh(f"{base}/tap{t}/fold"), {},
                                     [window, int64s(ctx, f"{base}/tap{t}/fold_shape",
                                                     [-1, channels, height, width])], [flat]))
                partial.append(conv_copy(ctx, node, ctx.fresh(f"{base}/tap{t}/conv"),
                                         [flat, w, *(bias if t == 0 else [])], added, **attrs))
            total = sum_terms(ctx, partial, ctx.target.rewrite.accumulate, f"{base}/sum", added)
            unfolded = variable(ctx, f"{base}/unfolded", x)
            added.append(gs.Node("Reshape", ctx.fresh(f"{base}/unfold"), {},
                                 [total, int64s(ctx, f"{base}/unfold_shape",
                                                [-1, plan.out_depth, cout, out_map])],
                                 [unfolded]))
            joined = variable(ctx, f"{base}/depth_back", x)
            added.append(gs.Node("Transpose", ctx.fresh(f"{base}/depth_back"),
                                 {"perm": [0, 2, 1, 3]}, [unfolded], [joined]))
        else:
            joined = self._per_frame(node, spec, volume, depth + pads[0] + pads[3], plan, taps,
                                     bias, attrs, ctx, added, (cout, out_map))
        added.append(gs.Node("Reshape", ctx.fresh(f"{base}/to_5d"), {},
                             [joined, int64s(ctx, f"{base}/shape_5d",
                                             [0, cout, plan.out_depth, *out_hw])], [y]))

    def _per_frame(self, node, spec, volume, depth, plan: RankPlan, taps, bias, attrs, ctx,
                   added, out_frame) -> gs.Tensor:
        """The sum per output frame (engines that take batch 1), frames joined on axis 2 of
        the 4-D [N, Cout, Dout, Ho*Wo] view."""
        base, (cout, out_map) = node.name, out_frame
        channels, (height, width) = spec.in_channels, spec.input_shape[3:]
        flat_frames: dict[int, gs.Tensor] = {}
        split = self._split_frames(volume, depth, ctx, base, added) \
            if ctx.target.allows_op("Split") else None

        def frame_2d(f: int) -> gs.Tensor:
            if f not in flat_frames:
                picked = split[f] if split is not None else slice_axes(
                    ctx, volume, [2], [f], [f + 1], [1], f"{base}/frame{f}", added)
                flat = variable(ctx, f"{base}/frame{f}/2d", volume)
                added.append(gs.Node("Reshape", ctx.fresh(f"{base}/frame{f}/squeeze"), {},
                                     [picked, int64s(ctx, f"{base}/frame{f}/shape",
                                                     [0, channels, height, width])], [flat]))
                flat_frames[f] = flat
            return flat_frames[f]

        outputs = []
        sd, dd = spec.strides[0], spec.dilations[0]
        for o in range(plan.out_depth):
            partial = [conv_copy(ctx, node, ctx.fresh(f"{base}/f{o}t{t}/conv"),
                                 [frame_2d(o * sd + t * dd), w, *(bias if t == 0 else [])],
                                 added, **attrs)
                       for t, (w, _) in enumerate(taps)]
            total = sum_terms(ctx, partial, ctx.target.rewrite.accumulate, f"{base}/f{o}/sum",
                              added)
            frame_out = variable(ctx, f"{base}/f{o}/row", volume)
            added.append(gs.Node("Reshape", ctx.fresh(f"{base}/f{o}/as_row"), {},
                                 [total, int64s(ctx, f"{base}/f{o}/row_shape",
                                                [0, cout, 1, out_map])], [frame_out]))
            outputs.append(frame_out)
        joined = variable(ctx, f"{base}/frames_joined", volume)
        added.append(gs.Node("Concat", ctx.fresh(f"{base}/frames"), {"axis": 2}, outputs,
                             [joined]))
        return joined

    @staticmethod
    def _split_frames(x: gs.Tensor, depth: int, ctx: RewriteContext, base: str,
                      added: list[gs.Node]) -> list[gs.Tensor]:
        """Every depth frame of the 4-D view ``x`` (depth padding included), by one Split."""
        frames = [variable(ctx, f"{base}/frame{f}/row", x) for f in range(depth)]
        name = ctx.fresh(f"{base}/split_frames")
        if ctx.opset >= 13:
            added.append(gs.Node("Split", name, {"axis": 2},
                                 [x, int64s(ctx, f"{base}/frame_sizes", [1] * depth)], frames))
        else:
            added.append(gs.Node("Split", name, {"axis": 2, "split": [1] * depth}, [x], frames))
        return frames
