"""A ConvTranspose whose uncropped output is not what TFLite's TRANSPOSE_CONV makes.

Vela runs a TRANSPOSE_CONV only when its output is input*stride + max(kernel - stride, 0) (VALID;
onnx2tf then crops the ONNX pads with a STRIDED_SLICE). ONNX's uncropped output is
stride*(input - 1) + kernel + output_padding, so only output_padding = max(stride - kernel, 0)
fits. Moving the difference into the end pads changes nothing that is kept: rows that
output_padding adds past the last kernel tap hold only the bias, and a crop that reaches into them
can be cropped one row less. Where the output keeps such bias-only rows (end pad smaller than the
surplus), the conv runs without them and bias, then a zero Pad and the bias Add restore them.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..conv import ConvSpec
from ..rules import Violation, valid_output_padding
from ..build.onnx_read import constant_value
from ..record import Record
from ..decline import Declined
from .protocol import Pass, RewriteContext, register_pass
from .emit import pad_spatial, replace, variable


@register_pass
class TransposedShape(Pass):
    name = "transposed_shape"
    fixes = frozenset({"transposed_valid_shape"})

    def rewrite(self, node: gs.Node, spec: ConvSpec, violations: list[Violation],
                ctx: RewriteContext) -> Record:
        if node.op != "ConvTranspose":
            raise Declined(f"{node.op} is not a transposed conv")
        if spec.auto_pad not in ("NOTSET", "", "VALID") or "output_shape" in node.attrs:
            raise Declined("output_shape / auto_pad SAME are resolved by the transposed lowering")
        rank = spec.rank
        pads = list(spec.pads or (0,) * (2 * rank)) if spec.auto_pad in ("NOTSET", "") \
            else [0] * (2 * rank)
        have = list(spec.output_padding or (0,) * rank)
        want = list(valid_output_padding(spec))
        ends = [pads[rank + i] + want[i] - have[i] for i in range(rank)]
        grow = [max(0, -e) for e in ends]            # bias-only rows the output keeps
        ends = [max(0, e) for e in ends]
        y, base = node.outputs[0], node.name
        added: list[gs.Node] = []
        attrs = {"pads": [*pads[:rank], *ends], "output_padding": want}
        if not any(grow):
            _transposed(ctx, node, list(node.inputs), attrs, y, added)
            how = f"pads {attrs['pads']}, output_padding {want} (the same outputs)"
            tolerance = "exact"
        else:
            self.require_ops(ctx, ["Pad"] + (["Add"] if spec.has_bias else []))
            inputs = list(node.inputs[:2])
            unbiased = _transposed(ctx, node, inputs, attrs, variable(ctx, f"{base}/conv.out", y),
                                   added)
            out = y if not spec.has_bias else None
            padded = pad_spatial(ctx, unbiased, [0] * rank, grow, f"{base}/bias_rows", added,
                                 out=out)
            if spec.has_bias:
                shaped = _bias_column(ctx, node.inputs[2], spec, base, added)
                added.append(gs.Node("Add", ctx.fresh(f"{base}/bias"), {}, [padded, shaped],
                                     [y]))
            how = (f"output_padding {want}, then {grow} bias-only rows by Pad"
                   + (" + bias Add" if spec.has_bias else ""))
            tolerance = "reassociating"
        record = self.record(node, spec, violations, how, added, tolerance)
        replace(node, ctx, added)
        return record


def _transposed(ctx: RewriteContext, node: gs.Node, inputs: list[gs.Tensor], attrs: dict,
                out: gs.Tensor, added: list[gs.Node]) -> gs.Tensor:
    """A copy of the ConvTranspose with ``attrs`` replaced (shapes are inferred afterwards)."""
    merged = {k: v for k, v in node.attrs.items() if k != "auto_pad"}
    merged.update(attrs)
    added.append(gs.Node("ConvTranspose", ctx.fresh(f"{node.name}/conv"), merged, inputs, [out]))
    return out


def _bias_column(ctx: RewriteContext, bias: gs.Tensor, spec: ConvSpec, base: str,
                 added: list[gs.Node]) -> gs.Tensor:
    """The bias as [C, 1, ...] for a broadcast Add: a constant when it is one."""
    shape = [spec.out_channels, *[1] * spec.rank]
    value = constant_value(bias)
    if value is not None:
        return gs.Constant(ctx.fresh(f"{base}/bias.column"), np.asarray(value).reshape(shape))
    Pass.require_ops(ctx, ["Reshape"])
    shaped = variable(ctx, f"{base}/bias.out", bias, shape)
    added.append(gs.Node("Reshape", ctx.fresh(f"{base}/bias_shape"), {},
                         [bias, gs.Constant(ctx.fresh(f"{base}/bias_shape.shape"),
                                            np.array(shape, dtype=np.int64))], [shaped]))
    return shaped
