"""Chunk fusion: a Concat of chunks that reaches a Split of the same axis with the same
boundaries, through any elementwise ops (Relu, Clip, Add, Mul, Q/DQ, ...), is removed; the ops
run per chunk. Channel chunks (the channel split's) and batch chunks (the batch split's, and the
pointwise ops the piecewise pass cut to match them) alike.

Channel splitting turns a residual stream of 1024 channels into Concat → Add → Relu → Split at
every block. The Concat/Split pairs cost more than the convs' extra launches: onnxruntime cannot
keep Split in its blocked (NCHWc) layout and reorders around it, and the Add/Relu can no longer be
fused into the conv. Keeping the stream chunked removes both costs and changes no arithmetic
(elementwise ops on slices are the same ops), so the result is bit-exact.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..gs_order import cleanup_and_toposort
from ..naming import Names
from ..build.onnx_read import constant_value
from .protocol import GraphPass, PassResult, RewriteContext, register_pass

# Ops whose output channel c depends only on input channel c (given broadcastable side inputs).
CHANNEL_LOCAL_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu",
    "Selu", "Celu", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Identity", "Neg", "Abs", "Exp",
    "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu",
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean",
    "QuantizeLinear", "DequantizeLinear",
})
PER_AXIS_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})   # params follow an axis attr


def fuse_chunks(graph: gs.Graph) -> list[int]:
    """Remove Concat→(elementwise ops)→Split round trips in place; returns the axis of each
    Split removed."""
    fusion = _ChunkFusion(graph)
    removed = []
    for split in [n for n in graph.nodes if n.op == "Split"]:
        cut = _split_sizes(split)
        if cut is None:
            continue
        if any(out is graph_out for out in split.outputs for graph_out in graph.outputs):
            continue
        axis, sizes = cut
        fusion.axis = axis
        chunks = fusion.chunks(split.inputs[0], tuple(sizes))
        if chunks is None:
            continue
        for out, chunk in zip(list(split.outputs), chunks):
            for consumer in list(out.outputs):
                for j, t in enumerate(list(consumer.inputs)):
                    if t is out:
                        consumer.inputs[j] = chunk
        split.outputs.clear()
        split.inputs.clear()
        removed.append(axis)
    fusion.concat_full_tensors()
    graph.nodes.extend(fusion.new_nodes)
    if removed:
        cleanup_and_toposort(graph)
    return removed


def _split_sizes(split: gs.Node) -> tuple[int, list[int]] | None:
    """(axis, chunk sizes) of a Split of a tensor of known rank, or None."""
    x = split.inputs[0]
    if not x.shape:
        return None
    axis = split.attrs.get("axis", 0) % len(x.shape)
    if "split" in split.attrs:
        return axis, list(split.attrs["split"])
    if len(split.inputs) > 1 and split.inputs[1].name:
        value = constant_value(split.inputs[1])
        return None if value is None else (axis, [int(v) for v in value])
    extent = x.shape[axis]
    if isinstance(extent, int) and extent % len(split.outputs) == 0:
        return axis, [extent // len(split.outputs)] * len(split.outputs)
    return None


class _ChunkFusion:
    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.memo: dict[tuple[int, int, tuple[int, ...]], list[gs.Tensor] | None] = {}
        self.axis = 1                       # the axis being chunked (the Split's)
        self.keys: list[gs.Tensor] = []
        self.new_nodes: list[gs.Node] = []
        self.computed: list[tuple[gs.Tensor, list[gs.Tensor], int]] = []   # made per chunk
        self.fresh = Names.in_graph(graph).fresh

    def chunks(self, tensor: gs.Tensor, sizes: tuple[int, ...]) -> list[gs.Tensor] | None:
        """``tensor`` as chunks of ``sizes`` on ``self.axis``, without a Split, or None."""
        key = (id(tensor), self.axis, sizes)
        if key not in self.memo:
            self.keys.append(tensor)       # alive while the memo is: no other tensor gets its id
            self.memo[key] = None          # guards against cycles while exploring
            self.memo[key] = self._chunks(tensor, sizes)
        return self.memo[key]

    def _chunks(self, tensor: gs.Tensor, sizes: tuple[int, ...]) -> list[gs.Tensor] | None:
        if len(tensor.inputs) != 1:
            return None
        node = tensor.inputs[0]
        if node.op == "Concat" and len(node.outputs) == 1:
            return self._from_concat(node, sizes)
        if node.op in CHANNEL_LOCAL_OPS and len(node.outputs) == 1:
            return self._per_chunk(node, sizes)
        return None

    def _from_concat(self, concat: gs.Node, sizes: tuple[int, ...]) -> list[gs.Tensor] | None:
        rank, axis = len(concat.outputs[0].shape or ()), self.axis
        if rank < 2 or concat.attrs.get("axis") % rank != axis:
            return None
        widths = [t.shape[axis] if t.shape and isinstance(t.shape[axis], int) else None
                  for t in concat.inputs]
        if list(sizes) == widths:
            return list(concat.inputs)
        return None

    def _per_chunk(self, node: gs.Node, sizes: tuple[int, ...]) -> list[gs.Tensor] | None:
        out, axis = node.outputs[0], self.axis
        if not out.shape or len(out.shape) < 2 or out.shape[axis] != sum(sizes):
            return None
        rank, bounds = len(out.shape), np.cumsum((0, *sizes))
        per_input: list[list[gs.Tensor]] = []
        pulled = False
        for position, tensor in enumerate(node.inputs):
            parts = self._input_parts(node, position, tensor, rank, sizes, bounds)
            if parts is None:
                return None
            pulled |= parts is not None and parts[0] is not tensor
            per_input.append(parts)
        if not pulled:
            return None
        results = []
        for i, size in enumerate(sizes):
            shape = list(out.shape)
            shape[axis] = size
            name = self.fresh(f"{node.name or out.name}/chunk.{i}")
            chunk_out = gs.Variable(f"{name}.out", dtype=out.dtype, shape=shape)
            self.new_nodes.append(gs.Node(node.op, name, dict(node.attrs),
                                          [parts[i] for parts in per_input], [chunk_out],
                                          domain=node.domain))
            results.append(chunk_out)
        self.computed.append((out, results, axis))
        return results

    def concat_full_tensors(self) -> None:
        """A tensor now computed per chunk is, for its other consumers, the Concat of its chunks:
        the full-width ops that produced it become dead instead of running twice."""
        for tensor, chunks, axis in self.computed:
            producer = tensor.inputs[0]
            producer.outputs.clear()
            name = self.fresh(f"{producer.name or tensor.name}/concat_chunks")
            self.new_nodes.append(gs.Node("Concat", name, {"axis": axis}, list(chunks),
                                          [tensor]))

    def _input_parts(self, node: gs.Node, position: int, tensor: gs.Tensor, rank: int,
                     sizes: tuple[int, ...], bounds: np.ndarray) -> list[gs.Tensor] | None:
        """One input of an elementwise op, cut to match the chunks (or shared when it
        broadcasts over the chunked axis)."""
        if not tensor.name:                         # an omitted optional input
            return [tensor] * len(sizes)
        channels, chunked = int(bounds[-1]), self.axis
        if node.op in PER_AXIS_OPS and position > 0:
            value = constant_value(tensor)
            if value is None:
                return None
            if value.size == 1 or node.attrs.get("axis", 1) % rank != chunked and \
                    value.ndim <= 1:        # per-axis along another axis: the same per chunk
                return [tensor] * len(sizes)
            if node.attrs.get("axis", 1) % rank != chunked or value.shape != (channels,):
                return None
            return [gs.Constant(self.fresh(f"{tensor.name}.chunk{i}"),
                                np.ascontiguousarray(value[bounds[i]:bounds[i + 1]]))
                    for i in range(len(sizes))]
        shape = tensor.shape
        if shape is None:
            return None
        axis = chunked - (rank - len(shape))        # the chunked axis after broadcasting
        if axis < 0 or shape[axis] == 1:
            return [tensor] * len(sizes)
        if shape[axis] != channels:
            return None
        value = constant_value(tensor)
        if value is not None:
            index = [slice(None)] * len(shape)
            parts = []
            for i in range(len(sizes)):
                index[axis] = slice(int(bounds[i]), int(bounds[i + 1]))
                parts.append(gs.Constant(self.fresh(f"{tensor.name}.chunk{i}"),
                                         np.ascontiguousarray(value[tuple(index)])))
            return parts
        if len(shape) != rank:
            return None
        return self.chunks(tensor, sizes)


@register_pass
class ChunkFusion(GraphPass):
    name = "chunk_fusion"

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        removed = fuse_chunks(ctx.graph) if ctx.target.rewrite.fuse_chunks else []
        channels = removed.count(1)
        others = sorted(set(removed) - {1})
        notes = [f"chunk fusion: {channels} Concat->Split round trips removed (the ops between "
                 "them run per channel chunk)"] if channels else []
        if others:
            notes.append(f"chunk fusion: {len(removed) - channels} Concat->Split round trips "
                         f"removed on axis {', '.join(map(str, others))} (the ops between them "
                         "run per chunk)")
        return PassResult(ctx.graph, bool(removed), notes=notes)
