"""Stride over the engine's limit, two ways, chosen by cost:

- subsample: run the conv at a legal stride and keep every s-th output (nncase's K210 path); a
  1x1 kernel without padding subsamples its input instead and wastes nothing. Exact; an integer
  conv (QLinearConv, ConvInteger) stays one, since slicing a quantized tensor is exact.
- space-to-depth: fold the stride into channels (SpaceToDepth, then a stride-1 conv with
  ceil(k/s) taps over s*s times the channels, weights rearranged to match). Fewer MACs for
  k > 1, one pass over the input. Products are summed in another order: reassociating (for an
  integer conv exact: its input padded with the zero point, its kernel extended with the
  weight's, the conv the same op).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..build.onnx_read import conv_inputs, weight_zero_points
from ..conv import INTEGER_CONVS, ConvSpec, dims_text
from ..rules import Violation
from ..plan.stride import plan_space_to_depth, plan_stride
from ..record import Record
from ..decline import Decline, Declined, need
from .protocol import Pass, RewriteContext, register_pass
from .emit import (INT64_MAX, conv_copy, pad_spatial, pad_value, replace, slice_spatial,
                   variable)
from .geometry_common import explicit_pads


@register_pass
class StrideSubsample(Pass):
    name = "stride"
    fixes = frozenset({"max_stride"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        pads = need(explicit_pads(node, spec))
        plan = need(plan_stride(spec, ctx.target, pads))
        folded = plan_space_to_depth(spec, ctx.target, pads)
        runtime_weight = not spec.constant_weight and not isinstance(folded, Decline)
        if runtime_weight:
            # space-to-depth rearranges the weight's taps (needs its values); subsampling passes
            # a run-time weight on whole
            folded = Decline("space-to-depth: it rearranges the weight's taps, computed at run "
                             "time")
        usable = not isinstance(folded, Decline) and ctx.target.allows_op("SpaceToDepth") \
            and ctx.target.allows_op("Pad") and (ctx.target.conv.max_stride or 1) == 1
        if usable and all(s == 1 for s in plan.input_steps) and folded.cost < folded.subsample_cost:
            return self._space_to_depth(node, spec, violations, folded, ctx)
        self.require_ops(ctx, ["Slice"])
        x, y, base, rank = node.inputs[0], node.outputs[0], node.name, spec.rank
        subsample_in = any(s > 1 for s in plan.input_steps)
        subsample_out = any(s > 1 for s in plan.output_steps)
        added: list[gs.Node] = []
        if subsample_in:
            x = slice_spatial(ctx, x, [0] * rank, [INT64_MAX] * rank, list(plan.input_steps),
                              f"{base}/subsample_in", added)
        conv_out = conv_copy(ctx, node, ctx.fresh(f"{base}/conv"), [x, *node.inputs[1:]], added,
                             out=None if subsample_out else y,
                             strides=list(plan.conv_strides), pads=list(pads))
        if subsample_out:
            slice_spatial(ctx, conv_out, [0] * rank, [INT64_MAX] * rank,
                          list(plan.output_steps), f"{base}/subsample_out", added, out=y)
        how = [f"conv at stride {dims_text(plan.conv_strides)}"]
        if subsample_in:
            how.append(f"input subsampled by {dims_text(plan.input_steps)}")
        if subsample_out:
            how.append(f"output subsampled by {dims_text(plan.output_steps)}")
        if runtime_weight:
            how.append(f"not {folded.reason}")
        elif not isinstance(folded, Decline):
            how.append(f"not space-to-depth: cost x{folded.cost:.2f} vs x{folded.subsample_cost:.2f}")
        record = self.record(node, spec, violations, ", ".join(how), added, tolerance="exact",
                             macs_factor=plan.mac_factor)
        replace(node, ctx, added)
        return record

    def _space_to_depth(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                        plan, ctx: RewriteContext) -> Record:
        s, (kh, kw) = plan.block, plan.kernel
        base, y = node.name, node.outputs[0]
        added: list[gs.Node] = []
        x = node.inputs[0]
        if any(e < 0 for e in plan.pads[2:]):
            x = slice_spatial(ctx, x, [0, 0], [e if e < 0 else INT64_MAX for e in plan.pads[2:]],
                              [1, 1], f"{base}/s2d_crop", added)
        x = pad_spatial(ctx, x, list(plan.pads[:2]), [max(0, e) for e in plan.pads[2:]],
                        f"{base}/s2d_pad", added, value=pad_value(node))
        folded = variable(ctx, f"{base}/space_to_depth.out", x)
        added.append(gs.Node("SpaceToDepth", ctx.fresh(f"{base}/space_to_depth"),
                             {"blocksize": s}, [x], [folded]))
        integer = spec.op_type in INTEGER_CONVS
        weight = self.weight(node)
        weight = weight.respaced((kh * s, kw * s), empty=weight_zero_points(node, spec)) \
            if integer else weight.respaced((kh * s, kw * s))
        cout, cin = weight.values.shape[:2]
        taps = weight.values.reshape(cout, cin, kh, s, kw, s).transpose(0, 3, 5, 1, 2, 4)
        try:
            weight = weight.with_values(taps.reshape(cout, s * s * cin, kh, kw))
        except ValueError as exc:
            raise Declined(str(exc)) from None
        stem = ctx.fresh(f"{base}/conv")
        w, w_nodes = weight.slice(stem, (slice(None),))
        added.extend(w_nodes)
        conv_copy(ctx, node, stem, conv_inputs(node, folded, w), added, out=y,
                  kernel_shape=[kh, kw], strides=[1, 1], pads=[0, 0, 0, 0])
        how = (f"space-to-depth {s}: {kh}x{kw} conv over {s * s}x the channels (cost "
               f"x{plan.cost:.2f} vs subsampling x{plan.subsample_cost:.2f})")
        factor = s * s * kh * kw / (spec.kernel_shape[0] * spec.kernel_shape[1])
        record = self.record(node, spec, violations, how, added,
                             tolerance="exact" if integer else "reassociating",
                             macs_factor=factor)
        replace(node, ctx, added)
        return record
