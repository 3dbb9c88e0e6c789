"""View sinking: a Reshape that makes a tensor of a rank the target lacks (the 4 -> 5-D view a
lowered 3-D conv ends with) moves on past the ops that do not care how the axes after the
channel axis are laid out, until it meets the next conv's own 5 -> 4-D view (the pair folds
away) or the model's interface (a graph output: the user's shape, kept).

Between two lowered 3-D convs a Relu, a BatchNormalization or a residual Add would otherwise run
on a 5-D tensor a rank-4 engine cannot hold. A Reshape that keeps the batch and channel axes
commutes with every op below: elementwise ops (exact), per-channel affine ops and per-tensor
Q/DQ (exact), per-(sample, channel) reductions over all the other axes (Global pools, Reduce*
over every axis after the channels, InstanceNormalization: the same elements, summed in another
order), Flatten from axis 1 and another Reshape (the same bytes). Runs with the tidying
passes, after local verification, because it moves the boundary of the rank lowering's rewrite.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx_read import constant_value
from ..gs_order import cleanup_and_toposort
from ..gs_graph import reimported
from ..naming import Names
from .chunk_fusion import CHANNEL_LOCAL_OPS
from .protocol import GraphPass, PassResult, RewriteContext, register_pass
from .shuffle import quant_grid

UNARY_OPS = CHANNEL_LOCAL_OPS - {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean",
                                 "PRelu", "QuantizeLinear", "DequantizeLinear"}
BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"})
PER_CHANNEL_OPS = frozenset({"BatchNormalization", "InstanceNormalization"})
POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
REDUCTIONS = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd",
                        "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare"})
MAX_ROUNDS = 64


def _shape_of(reshape: gs.Node) -> list[int] | None:
    """The constant target shape of a Reshape; 0 copies an extent (allowzero, which the dynamo
    exporter sets, only changes what a 0 means, so a shape without one reads the same)."""
    if reshape.op != "Reshape" or len(reshape.inputs) < 2:
        return None
    value = constant_value(reshape.inputs[1])
    if value is None:
        return None
    shape = [int(v) for v in np.asarray(value).ravel()]
    return None if reshape.attrs.get("allowzero", 0) and 0 in shape else shape


def _static(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _same_known_shape(a, b) -> bool:
    """Equal shapes, every extent a size or a named symbol (the same batch ``N`` in both)."""
    return a is not None and a == b and all(
        isinstance(d, int) and d >= 0 or isinstance(d, str) and d for d in a)


def _twin_sources(a, b, shape: list[int]) -> bool:
    """Do two views by ``shape`` read sources that an elementwise op may take in their place?
    The same extents after the batch, and the batch the same or copied by both views (a
    batch-broadcast then broadcasts the sources alike; shape inference often names a batch
    behind a -1 Reshape afresh, so the symbols need not match)."""
    if a is None or b is None or len(a) != len(b) or not _static(a[1:]) or a[1:] != b[1:]:
        return False
    return shape[0] == 0 or _same_known_shape(a[:1], b[:1])


def widening_view(reshape: gs.Node, max_rank: int) -> bool:
    """A Reshape from a tensor the target holds to one of a rank it lacks."""
    shape = _shape_of(reshape)
    if shape is None or not reshape.outputs:
        return False
    src, dst = reshape.inputs[0].shape, reshape.outputs[0].shape
    return src is not None and dst is not None and 1 <= len(src) <= max_rank < len(dst)


def keeps_batch_and_channels(reshape: gs.Node) -> bool:
    """Does the view leave axes 0 and 1 as they were (so per-sample, per-channel ops commute)?"""
    shape, src = _shape_of(reshape), reshape.inputs[0].shape
    if len(src) < 2 or not isinstance(src[1], int) or shape[1] not in (0, src[1]):
        return False
    return shape[0] == 0 or (isinstance(src[0], int) and shape[0] == src[0])


def _channel_constant(value: np.ndarray, rank: int, channels: int, new_rank: int):
    """``value`` (broadcast against a rank-``rank`` tensor) at rank ``new_rank``, when it varies
    along the channel axis at most."""
    if value.ndim > rank:
        return None
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if any(d != 1 for d in full.shape[2:]) or full.shape[0] != 1 or \
            full.shape[1] not in (1, channels):
        return None
    return full.reshape(full.shape[:2] + (1,) * (new_rank - 2)) if value.ndim > 1 else value


class _Sinker:
    def __init__(self, graph: gs.Graph, max_rank: int, fresh):
        self.graph, self.max_rank, self.fresh = graph, max_rank, fresh
        self.outputs = {id(t) for t in graph.outputs}

    def view_after(self, node: gs.Node, view: gs.Node, shape: list[int]) -> None:
        """``node`` now writes the view's source layout; a copy of the view restores its output."""
        out = node.outputs[0]
        inner = gs.Variable(self.fresh(f"{out.name}/view_src"), dtype=out.dtype)
        node.outputs[0] = inner
        self.graph.nodes.append(gs.Node("Reshape", self.fresh(f"{view.name}/after_{node.name}"),
                                        {}, [inner, gs.Constant(self.fresh(
                                            f"{view.name}/shape_{node.name}"),
                                            np.asarray(shape, np.int64))], [out]))

    def sink_one(self, view: gs.Node) -> bool:
        """Move ``view`` past one of its readers; True when something changed."""
        src, dst = view.inputs[0], view.outputs[0]
        if id(dst) in self.outputs:
            return False
        shape = _shape_of(view)
        for reader in list(dst.outputs):
            if self._sink_into(view, reader, src, dst, shape):
                return True
        return False

    def _sink_into(self, view, reader, src, dst, shape) -> bool:
        op, rank = reader.op, len(dst.shape)
        channels = src.shape[1] if len(src.shape) > 1 else None
        keeps = keeps_batch_and_channels(view)
        if op == "Reshape" and reader.inputs[0] is dst:
            later = _shape_of(reader)       # a 0 copies an extent of the view's output
            if later is None:
                return False
            if any(d == 0 for d in later[2:]) or not keeps and any(d == 0 for d in later):
                copied = _copied_extents(later, dst.shape)
                if copied is None:
                    return False
                reader.inputs[1] = gs.Constant(self.fresh(f"{reader.name}/shape_src"),
                                               np.asarray(copied, np.int64))
            reader.inputs[0] = src          # the same bytes, whatever view came between
            return True
        if not keeps:
            return False
        if op == "Flatten" and reader.attrs.get("axis", 1) == 1:
            reader.inputs[0] = src
            return True
        if len(reader.outputs) != 1 or reader.inputs[0] is not dst and op not in BINARY_OPS:
            return False
        if op in UNARY_OPS or op in ("QuantizeLinear", "DequantizeLinear") and \
                quant_grid(reader) is not None:
            reader.inputs[0] = src
            self.view_after(reader, view, shape)
            return True
        if op in PER_CHANNEL_OPS and all(t is not dst for t in reader.inputs[1:]):
            reader.inputs[0] = src
            self.view_after(reader, view, shape)
            return True
        if op in POOLS:
            reader.inputs[0] = src
            self.view_after(reader, view, [0, 0] + [1] * (rank - 2))
            return True
        if op in REDUCTIONS and reader.inputs[0] is dst:
            return self._sink_reduction(view, reader, src, rank)
        if op in BINARY_OPS and len(reader.inputs) == 2:
            return self._sink_binary(view, reader, src, dst, shape, rank, channels)
        return False

    def _sink_reduction(self, view, reader, src, rank) -> bool:
        """A reduction over every axis after the channels (PyTorch's AdaptiveAvgPool3d(1) as
        ReduceMean over 2, 3, 4) is the same reduction over the view's source axes after 1."""
        axes = reader.attrs.get("axes")
        from_input = axes is None and len(reader.inputs) > 1 and reader.inputs[1].name
        if from_input:
            value = constant_value(reader.inputs[1])
            axes = None if value is None else [int(a) for a in np.asarray(value).ravel()]
        if axes is None or sorted(a % rank for a in axes) != list(range(2, rank)):
            return False
        inner = list(range(2, len(src.shape)))
        reader.inputs[0] = src
        if from_input:
            reader.inputs[1] = gs.Constant(self.fresh(f"{reader.name}/axes_src"),
                                           np.asarray(inner, np.int64))
        else:
            reader.attrs["axes"] = inner
        if reader.attrs.get("keepdims", 1):
            self.view_after(reader, view, [0, 0] + [1] * (rank - 2))
        return True

    def _sink_binary(self, view, reader, src, dst, shape, rank, channels) -> bool:
        inputs = []
        for operand in reader.inputs:
            if operand is dst:
                inputs.append(src)
                continue
            twin = operand.inputs[0] if len(operand.inputs) == 1 else None
            if twin is not None and twin.op == "Reshape" and _shape_of(twin) == shape and \
                    _twin_sources(twin.inputs[0].shape, src.shape, shape):
                inputs.append(twin.inputs[0])
                continue
            value = constant_value(operand)
            narrowed = None if value is None else \
                _channel_constant(value, rank, channels, len(src.shape))
            if narrowed is None:
                return False
            inputs.append(operand if narrowed is value else gs.Constant(
                self.fresh(f"{operand.name}/as_{len(src.shape)}d"), np.ascontiguousarray(narrowed)))
        _replace_inputs(reader, inputs)
        self.view_after(reader, view, shape)
        return True


def _copied_extents(shape: list[int], copied_from) -> list[int] | None:
    """``shape`` with each 0 (copy the extent) spelled out from ``copied_from``, where those
    extents are static; None where one is not."""
    out = []
    for axis, d in enumerate(shape):
        if d == 0:
            if copied_from is None or axis >= len(copied_from) or \
                    not isinstance(copied_from[axis], int):
                return None
            d = copied_from[axis]
        out.append(d)
    return out


def _keeps_every_extent(shape: list[int] | None, src) -> bool:
    """A Reshape to ``shape`` that leaves a source of shape ``src`` as it is: each extent copied
    (0) or equal, a symbolic batch included."""
    if shape is None or src is None or len(shape) != len(src):
        return False
    return all(d == 0 or isinstance(e, int) and d == e for d, e in zip(shape, src))


def _replace_inputs(node: gs.Node, inputs: list[gs.Tensor]) -> None:
    for i, tensor in enumerate(inputs):      # graphsurgeon's lists take items, not slices
        if node.inputs[i] is not tensor:
            node.inputs[i] = tensor


def drop_identity_reshapes(graph: gs.Graph) -> int:
    """Reshapes whose input and output have the same static shape (left by a folded pair)."""
    dropped = 0
    outputs = {id(t) for t in graph.outputs}
    for node in list(graph.nodes):
        if node.op != "Reshape" or not node.outputs or id(node.outputs[0]) in outputs:
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if not (_static(src.shape) and src.shape == dst.shape) and \
                not _keeps_every_extent(_shape_of(node), src.shape):
            continue
        for reader in list(dst.outputs):
            _replace_inputs(reader, [src if t is dst else t for t in reader.inputs])
        node.outputs.clear()
        dropped += 1
    return dropped


@register_pass
class ViewSinking(GraphPass):
    name = "view_sinking"

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        limit = ctx.target.max_tensor_rank
        if limit is None:
            return PassResult(ctx.graph)
        graph, moved, dropped = ctx.graph, 0, 0
        fresh = Names.in_graph(graph).fresh
        for _ in range(MAX_ROUNDS):
            sinker = _Sinker(graph, limit, fresh)
            changed = sum(sinker.sink_one(n) for n in list(graph.nodes)
                          if widening_view(n, limit))
            if not changed:
                break
            moved += changed
            graph.cleanup(remove_unused_graph_inputs=False)
            graph = reimported(graph, like)      # shapes of what moved, afresh
            dropped += drop_identity_reshapes(graph)
        if not moved:
            return PassResult(ctx.graph)
        cleanup_and_toposort(graph)
        return PassResult(graph, True, notes=[
            f"view sinking: {moved} moves of a Reshape to rank {limit + 1}+ past layout-blind "
            f"ops, {dropped} Reshape pairs folded away"])
