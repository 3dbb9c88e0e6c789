"""Padding the engine cannot do: an explicit Pad before the conv, and, where the engine pads more
than the conv did (the K210 pads 3x3 by exactly 1), a crop of the extra outputs after it.

auto_pad SAME_UPPER / SAME_LOWER are resolved to explicit pads on the way. Zeros are zeros
whoever adds them: exact.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..rules import Violation
from ..plan.padding import plan_padding
from ..record import Record
from ..decline import need
from .protocol import Pass, RewriteContext
from .emit import conv_copy, pad_spatial, replace, slice_spatial
from .geometry_common import explicit_pads


class ExplicitPadding(Pass):
    name = "padding"
    fixes = frozenset({"max_pad", "symmetric_pad", "same_pad_only"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        pads = need(explicit_pads(node, spec))
        plan = need(plan_padding(spec, ctx.target, pads))
        rank = spec.rank
        pad_in, crop = any(plan.input_pads), plan.crops
        self.require_ops(ctx, [op for op, used in (("Pad", pad_in), ("Slice", crop)) if used])
        x, y, base = node.inputs[0], node.outputs[0], node.name
        added: list[gs.Node] = []
        x = pad_spatial(ctx, x, list(plan.input_pads[:rank]), list(plan.input_pads[rank:]),
                        f"{base}/pad", added)
        conv_out = conv_copy(ctx, node, ctx.fresh(f"{base}/conv"), [x, *node.inputs[1:]], added,
                             out=None if crop else y, pads=list(plan.conv_pads))
        if crop:
            slice_spatial(ctx, conv_out, list(plan.crop_starts), list(plan.crop_ends),
                          [1] * rank, f"{base}/crop", added, out=y)
        how = [f"conv pads {list(plan.conv_pads)}"]
        if pad_in:
            how.append(f"explicit Pad {list(plan.input_pads)}")
        if crop:
            how.append(f"crop from {list(plan.crop_starts)}")
        factor = _crop_factor(spec, conv_out)
        record = self.record(node, spec, violations, ", ".join(how), added, tolerance="exact",
                             macs_factor=factor)
        replace(node, ctx, added)
        return record


def _crop_factor(spec: ConvSpec, conv_out: gs.Tensor) -> float:
    """MACs spent on outputs the crop throws away, as a factor over the original's."""
    before, after = spec.output_shape, conv_out.shape
    if before is None or after is None or not all(isinstance(d, int) for d in
                                                  [*before[2:], *after[2:]]):
        return 1.0
    factor = 1.0
    for n, m in zip(before[2:], after[2:]):
        factor *= m / n
    return factor
