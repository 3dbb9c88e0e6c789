"""Padding the engine cannot do: an explicit Pad before the conv, and, where the engine pads more
than the conv did (the K210 pads 3x3 by exactly 1), a crop of the extra outputs after it.

auto_pad SAME_UPPER / SAME_LOWER are resolved to explicit pads on the way. Zeros are zeros
whoever adds them: exact.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..legality import Violation
from ..plan import plan_padding
from ..record import Record
from .base import Pass, RewriteContext
from .emit import INT64_MAX, conv_copy, pad_spatial, replace, slice_spatial
from .geometry_common import explicit_pads


class ExplicitPadding(Pass):
    name = "padding"
    fixes = frozenset({"max_pad", "symmetric_pad", "same_pad_only"})

    def run(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
            ctx: RewriteContext) -> Record | str:
        pads = explicit_pads(node, spec)
        if isinstance(pads, str):
            return pads
        plan = plan_padding(spec, ctx.target, pads)
        if isinstance(plan, str):
            return plan
        rank = spec.rank
        pad_in, crop = any(plan.input_pads), any(plan.output_crop)
        missing = [op for op, used in (("Pad", pad_in), ("Slice", crop))
                   if used and not ctx.target.allows_op(op)]
        if missing:
            return f"the target's ops list lacks {', '.join(missing)}"
        x, y, base = node.inputs[0], node.outputs[0], node.name
        added: list[gs.Node] = []
        x = pad_spatial(ctx, x, list(plan.input_pads[:rank]), list(plan.input_pads[rank:]),
                        f"{base}/pad", added)
        conv_out = conv_copy(ctx, node, ctx.fresh(f"{base}/conv"), [x, *node.inputs[1:]], added,
                             out=None if crop else y, pads=list(plan.conv_pads))
        if crop:
            ends = [-c if c else INT64_MAX for c in plan.output_crop[rank:]]
            slice_spatial(ctx, conv_out, list(plan.output_crop[:rank]), ends, [1] * rank,
                          f"{base}/crop", added, out=y)
        how = [f"conv pads {list(plan.conv_pads)}"]
        if pad_in:
            how.append(f"explicit Pad {list(plan.input_pads)}")
        if crop:
            how.append(f"crop {list(plan.output_crop)}")
        factor = _crop_factor(spec, plan.output_crop)
        record = self.record(node, spec, violations, ", ".join(how), added, tolerance="exact",
                             macs_factor=factor)
        replace(node, ctx, added)
        return record


def _crop_factor(spec: ConvSpec, crop: tuple[int, ...]) -> float:
    """MACs spent on outputs the crop throws away, as a factor over the original's."""
    if spec.output_shape is None or any(d is None for d in spec.output_shape[2:]):
        return 1.0
    factor = 1.0
    for d, n in enumerate(spec.output_shape[2:]):
        factor *= (n + crop[d] + crop[d + spec.rank]) / n
    return factor
