"""Small ONNX emitters every lowering shares: sums of partial convs, Slice, Pad, conv copies.

Each returns the tensor it produces and appends its nodes to ``added``; where the input's shape is
known the output's shape is set too, so the next legality check sees real extents.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..build.onnx import INT64_MAX, OnnxBuilder, conv_output_shape
from ..build.onnx_read import IO_POSITIONS, quant_operands
from .protocol import RewriteContext

__all__ = ["INT64_MAX", "builder", "conv_copy", "int64s", "pad_spatial", "pad_value", "replace",
           "slice_axes", "slice_spatial", "sum_terms", "variable"]


def variable(ctx: RewriteContext, name: str, like: gs.Tensor, shape=None) -> gs.Variable:
    return gs.Variable(ctx.fresh(name), dtype=like.dtype, shape=shape)


def int64s(ctx: RewriteContext, name: str, values) -> gs.Constant:
    return gs.Constant(ctx.fresh(name), np.asarray(values, dtype=np.int64))


def sum_terms(ctx: RewriteContext, terms: list[gs.Tensor], accumulate: str, stem: str,
              added: list[gs.Node], out: gs.Tensor | None = None) -> gs.Tensor:
    """``OnnxBuilder.sum`` for the passes not yet on the Builder."""
    return builder(ctx, added).sum(terms, accumulate, stem, out)


def builder(ctx: RewriteContext, added: list[gs.Node]) -> OnnxBuilder:
    """An ONNX Builder writing into ``added`` with the context's names, opset and sums."""
    b = OnnxBuilder(ctx.fresh, "", opset=ctx.opset, regroupable=ctx.regroupable_sums)
    b.nodes = added
    return b


def slice_spatial(ctx: RewriteContext, x: gs.Tensor, starts: list[int], ends: list[int],
                  steps: list[int], stem: str, added: list[gs.Node],
                  out: gs.Tensor | None = None) -> gs.Tensor:
    """Slice every spatial axis (2..) of ``x``; ends may be negative or INT64_MAX."""
    return slice_axes(ctx, x, list(range(2, 2 + len(starts))), starts, ends, steps, stem, added,
                      out)


def slice_axes(ctx: RewriteContext, x: gs.Tensor, axes: list[int], starts: list[int],
               ends: list[int], steps: list[int], stem: str, added: list[gs.Node],
               out: gs.Tensor | None = None) -> gs.Tensor:
    """``OnnxBuilder.slice_axes`` for the passes not yet on the Builder."""
    return builder(ctx, added).slice_axes(x, axes, starts, ends, steps, stem, out)


def pad_spatial(ctx: RewriteContext, x: gs.Tensor, begins: list[int], ends: list[int],
                stem: str, added: list[gs.Node], out: gs.Tensor | None = None,
                value: gs.Tensor | None = None) -> gs.Tensor:
    """``OnnxBuilder.pad_spatial`` for the passes not yet on the Builder."""
    return builder(ctx, added).pad_spatial(x, begins, ends, stem, out, value)


def pad_value(node: gs.Node) -> gs.Tensor | None:
    """What the conv pads with (``ConvSite.pad_value``): an integer conv's input zero point."""
    return quant_operands(node).get("x_zero_point")


def conv_copy(ctx: RewriteContext, node: gs.Node, name: str, inputs: list[gs.Tensor],
              added: list[gs.Node], out: gs.Tensor | None = None, **attrs) -> gs.Tensor:
    """The node's op with its attributes, some replaced (explicit pads drop auto_pad); ``name``
    must already be unique (``ctx.fresh``)."""
    merged = dict(node.attrs)
    merged.update(attrs)
    if "pads" in attrs:
        merged.pop("auto_pad", None)
    weight = inputs[IO_POSITIONS[node.op][1]]       # a QLinearConv's is input 3
    rank = len(merged.get("kernel_shape", weight.shape[2:]))
    merged.setdefault("kernel_shape", list(weight.shape[2:]))
    out_channels = weight.shape[0]
    shape = None if node.op != "Conv" else \
        conv_output_shape(inputs[0], out_channels, merged["kernel_shape"],
                          merged.get("strides", [1] * rank), merged.get("dilations", [1] * rank),
                          merged.get("pads", [0] * (2 * rank)))     # (a Conv's formula)
    result = out if out is not None else variable(ctx, f"{name}.out", node.outputs[0], shape)
    added.append(gs.Node(node.op, name, merged, inputs, [result]))
    return result


def replace(node: gs.Node, ctx: RewriteContext, added: list[gs.Node]) -> None:
    """Detach ``node`` and put ``added`` in the graph (it writes the node's old output)."""
    node.inputs.clear()
    node.outputs.clear()
    ctx.graph.nodes.extend(added)
