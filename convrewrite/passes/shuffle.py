"""Channel shuffles without the 5-D tensors: ShuffleNet's Reshape -> Transpose -> Reshape (and
the variants that Split or Gather afterwards, or compute the Reshape shapes at run time from
Shape/Gather/Div as TorchScript exports do) only ever pick channels of their input. Which
channels is found by running the region on onnxruntime with probe inputs (so no exporter's
spelling needs a pattern), then each output becomes, by ``plan.selection.plan_selection``'s cost:
folded into the weights of the convs that read it (zero cost for a permutation; the conv then
sums its input channels in another order), a Gather on the channel axis, or a 1x1 one-hot conv
(both exact)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..decline import Decline
from ..rules import Violation, rules_named
from ..build.onnx_read import const_weight, constant_value, spec_of
from ..weights import absorb_selection, selection_weight
from ..plan.selection import fold_growth, plan_selection
from .protocol import RewriteContext, register_pass
from .emit import variable
from ..shape_folding import ARITHMETIC
from .probe import PROBE_EXTENT, QDQ_OPS, run_region
from .protocol import PassResult, GraphPass, detach, region_record

MOVEMENT_OPS = {"Reshape", "Transpose", "Split", "Slice", "Gather", "Squeeze", "Unsqueeze",
                "Flatten", "Identity"}


def quant_grid(node: gs.Node) -> tuple | None:
    """(scale, zero point, its dtype) of a per-tensor Q/DQ node with constant parameters."""
    scale = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    zp = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name \
        else np.zeros((), np.uint8)
    if scale is None or zp is None or scale.size != 1 or zp.size != 1:
        return None
    return float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), zp.dtype.name


def _carries(reader: gs.Node, tensor: gs.Tensor) -> bool:
    """Does ``reader`` pass ``tensor``'s channels on unchanged in kind (data movement, or a
    per-tensor quantize/dequantize as QDQ models wrap every Reshape and Transpose in)?"""
    if not reader.inputs or reader.inputs[0] is not tensor:
        return False
    return reader.op in MOVEMENT_OPS or (reader.op in QDQ_OPS and quant_grid(reader) is not None)


def _rank(tensor: gs.Tensor, node: gs.Node) -> int | None:
    if tensor.shape is not None:
        return len(tensor.shape)
    if node.op == "Transpose" and "perm" in node.attrs:
        return len(node.attrs["perm"])
    return None


VIEW_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}


def _interface_view(node: gs.Node, graph: gs.Graph) -> bool:
    if any(out is t for out in node.outputs for t in graph.outputs):
        return True
    source = node.inputs[0] if node.inputs else None
    if source is None or not any(source is t for t in graph.inputs) or source.shape is None:
        return False
    rank = _rank(node.outputs[0], node)
    return rank is not None and rank <= len(source.shape)


def offence(node: gs.Node, target, graph: gs.Graph | None = None) -> Violation | None:
    """Why the target cannot run this data-movement node, if it cannot. A view (the same bytes,
    another shape) writing an output of ``graph``, or reading an input of ``graph`` into no more
    axes than it has, is the model's own interface: its rank is the user's, not a tensor the
    engine holds."""
    if node.op not in MOVEMENT_OPS or not node.outputs:
        return None
    if graph is not None and node.op in VIEW_OPS and _interface_view(node, graph):
        return None
    if node.op == "Transpose" and not target.allows_op("Transpose"):
        return Violation("ops", "Transpose", list(target.ops or []), "Transpose is not in the "
                         "target's ops")
    rank = _rank(node.outputs[0], node)
    if target.max_tensor_rank is not None and rank is not None and rank > target.max_tensor_rank:
        return Violation("max_tensor_rank", rank, target.max_tensor_rank,
                         f"{node.op} makes a {rank}-D tensor; the target handles at most "
                         f"{target.max_tensor_rank}-D")
    return None


def _data_producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def find_region(trigger: gs.Node, graph: gs.Graph):
    """(x, movement nodes, outputs): the activation the movement chain starts from, every
    movement node reachable from it through data inputs, and the tensors leaving them."""
    node = trigger
    while True:
        producer = _data_producer(node.inputs[0])
        if producer is None or producer.op not in MOVEMENT_OPS:
            break
        node = producer
    x = node.inputs[0]
    nodes, stack = [], [node]
    while stack:
        current = stack.pop()
        if current in nodes:
            continue
        nodes.append(current)
        for out in current.outputs:
            stack += [r for r in out.outputs if _carries(r, out)]
    return x, nodes, region_outputs(nodes, graph)


def region_outputs(nodes: list[gs.Node], graph: gs.Graph) -> list[gs.Tensor]:
    """The tensors of ``nodes`` read outside them. Shape arithmetic that only computes the
    region's own Reshape targets (TorchScript's ``windows.view(-1, h, w, windows.shape[-1])``
    in Swin's window reverse) is not such a reader: it belongs to the region and goes with it."""
    inside, serving = set(map(id, nodes)), {}
    outputs = []
    for node in nodes:
        for out in node.outputs:
            if out in graph.outputs or any(id(r) not in inside and not _serves(r, inside, graph,
                                                                                  serving)
                                           for r in out.outputs):
                outputs.append(out)
    return outputs


def _serves(node: gs.Node, inside: set[int], graph: gs.Graph, memo: dict[int, bool]) -> bool:
    """Does ``node`` only compute shape inputs of the region (ids ``inside``): shape arithmetic
    (reading region tensors through Shape alone, never their values) whose every reader is a
    region node or serves it too?"""
    if id(node) not in memo:
        memo[id(node)] = False              # a cycle back here (impossible in a DAG) serves not
        reads_values = node.op not in ("Shape", "Size") and any(
            t.inputs and id(t.inputs[0]) in inside for t in node.inputs)
        memo[id(node)] = node.op in ARITHMETIC and not reads_values and all(
            out not in graph.outputs and out.outputs and all(
                (id(r) in inside and r.inputs[0] is not out) or
                (id(r) not in inside and _serves(r, inside, graph, memo))
                for r in out.outputs)
            for out in node.outputs)
    return memo[id(node)]


def probe_selection(x: gs.Tensor, nodes: list[gs.Node], outputs: list[gs.Tensor],
                    graph: gs.Graph, like: onnx.ModelProto) -> list[np.ndarray] | Decline:
    """Per output, the input channels it consists of (``out = x[:, src]``), by running the
    region on a channel-index ramp and on random data; or why it is not a channel selection."""
    if x.shape is None or not isinstance(x.shape[1], int) or len(x.shape) < 3:
        return Decline("the shuffle's input has no static channel count")
    dims = [d if isinstance(d, int) else PROBE_EXTENT[min(i, 2)] for i, d in enumerate(x.shape)]
    dims[0] = x.shape[0] if isinstance(x.shape[0], int) else 2
    ramp, noise = probe_inputs(dims)
    runs = run_region(x, nodes, outputs, graph, like, [ramp, noise])
    if isinstance(runs, Decline):
        return runs
    return decode_selections(dims, noise, *runs)


def probe_inputs(dims) -> tuple[np.ndarray, np.ndarray]:
    """The two probes of a region over a [N, C, ...] tensor: each channel holding its index + 1,
    and random data (any IR runs them: onnxruntime here, TVM in tvm/relax_shuffle.py)."""
    dims = list(dims)
    ramp = np.broadcast_to(np.arange(1, dims[1] + 1, dtype=np.float32).reshape(
        1, -1, *[1] * (len(dims) - 2)), dims).copy()
    return ramp, np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def decode_selections(dims, noise: np.ndarray, by_ramp, by_noise) -> list[np.ndarray] | Decline:
    """Per output, the input channels it consists of (``out = x[:, src]``), read from the
    ramp's output and confirmed on the random data's; or why it is not a selection."""
    dims = list(dims)
    selections = []
    for a, b in zip(by_ramp, by_noise):
        if a.ndim != len(dims) or a.shape[0] != dims[0] or list(a.shape[2:]) != dims[2:]:
            return Decline(f"an output of shape {list(a.shape)} is not channels of {dims}")
        src = a[(0, slice(None), *[0] * (a.ndim - 2))].astype(np.int64) - 1
        if src.min(initial=0) < 0 or not np.array_equal(b, noise[:, src]):
            return Decline("an output is not a channel selection of the input")
        selections.append(src)
    return selections


def _reads_only_shape(tensor: gs.Tensor, region: list[gs.Node], graph: gs.Graph) -> bool:
    """Outside the region only Shape nodes read it (TorchScript's run-time chunk sizes)."""
    outside = [r for r in tensor.outputs if r not in region]
    return tensor not in graph.outputs and all(r.op == "Shape" for r in outside)


def _absorbers(tensor: gs.Tensor, graph: gs.Graph) -> list[gs.Node] | None:
    """The consumers, when every one is a dense conv with a constant float weight that can take
    the selection into its input channels."""
    if tensor in graph.outputs or not tensor.outputs:
        return None
    convs = []
    for consumer in tensor.outputs:
        if consumer.op != "Conv" or consumer.inputs[0] is not tensor:
            return None
        spec = spec_of(consumer)
        weight = const_weight(consumer.inputs[1])
        if isinstance(spec, Decline) or spec.groups != 1 or isinstance(weight, Decline) \
                or weight.quantized:
            return None
        convs.append(consumer)
    return convs


@register_pass
class ShuffleRemoval(GraphPass):
    name = "shuffle"
    fixes = rules_named("max_tensor_rank")

    def __init__(self, never_fold: bool = False):
        self.never_fold = never_fold                # benchmarks: Gather even where folding is free

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        for node in list(ctx.graph.nodes):
            violation = offence(node, ctx.target, ctx.graph)
            if violation is None:
                continue
            x, nodes, outputs = find_region(node, ctx.graph)
            grid = region_grid(x, nodes)
            src = probe_selection(x, nodes, outputs, ctx.graph, like) \
                if not isinstance(grid, Decline) else \
                Decline("the shuffle requantizes to another scale on the way (not a pure "
                        "selection)")
            if isinstance(src, Decline):
                outcome.decline(node, f"shuffle: {src}")
                continue
            outcome.add(self._rewrite(x, nodes, outputs, src, violation, ctx, like,
                                                 grid))
        return outcome

    def _rewrite(self, x, nodes, outputs, selections, violation, ctx, like, grid):
        channels = x.shape[1]
        added, choices, checked, folded, extra_macs = [], [], [], [], 0
        for out, src in zip(outputs, selections):
            if len(src) == channels and _reads_only_shape(out, nodes, ctx.graph):
                for reader in [r for r in out.outputs if r.op == "Shape"]:
                    reader.inputs[0] = x        # same shape as x: run-time shape arithmetic
                continue
            convs = _absorbers(out, ctx.graph)
            folded_macs = None if convs is None or self.never_fold else \
                fold_growth([spec_of(c) for c in convs], len(src), channels)
            plan = plan_selection(len(src), channels, x.shape[2:], folded_macs, ctx.target)
            choices.append(f"{len(src)} of {channels} channels: {plan.strategy}")
            if plan.form == "fold":
                extra_macs += folded_macs
                folded += [(conv, src) for conv in convs]
                checked += [conv.outputs[0] for conv in convs]
            else:
                emit_selection(ctx, x, src, plan.form, out, added, grid)
                checked.append(out)
        region = nodes + [conv for conv, _ in folded]
        record = region_record(self.name, region, x, checked, ctx, like,
                               "shuffle removed; " + "; ".join(choices), added,
                               rules=[violation], macs_before=0, macs_after=extra_macs,
                               tolerance="reassociating" if folded else "exact")
        fresh = []
        for conv, src in folded:
            fresh.append(fold_into_conv(ctx, conv, x, src))
        detach(region)
        ctx.graph.nodes.extend(added + fresh)
        return record


MIXED_GRID = Decline("its Q/DQ do not all keep the input's own grid")


def region_grid(x: gs.Tensor, nodes: list[gs.Node]) -> "gs.Node | None | Decline":
    """The quantization grid of a QDQ region: None when it has no Q/DQ, a Decline when its Q/DQ
    do not all keep x's own grid (then it is not a pure selection), else the grid's DQ node."""
    qdq = [n for n in nodes if n.op in QDQ_OPS]
    if not qdq:
        return None
    source = x.inputs[0] if len(x.inputs) == 1 else None
    if source is None or source.op != "DequantizeLinear" or quant_grid(source) is None:
        return MIXED_GRID
    if any(quant_grid(n) != quant_grid(source) for n in qdq):
        return MIXED_GRID
    return source


def emit_selection(ctx: RewriteContext, x: gs.Tensor, src: np.ndarray, form: str,
                   out: gs.Tensor, added: list[gs.Node], grid: gs.Node | None = None) -> None:
    """``out = x[:, src]``; in a QDQ model the selection is quantized again on x's own grid (an
    exact round trip) so that the op reading it still sees a DequantizeLinear, as QDQ wants."""
    stem = ctx.fresh(f"{out.name}/select")
    final = out
    if grid is not None:
        out = variable(ctx, f"{stem}.float", x)
    if form == "gather":
        indices = gs.Constant(f"{stem}.indices", np.asarray(src, dtype=np.int64))
        added.append(gs.Node("Gather", stem, {"axis": 1}, [x, indices], [out]))
    else:
        _one_hot_conv(ctx, x, src, stem, out, added)
    if grid is not None:
        q = gs.Variable(ctx.fresh(f"{stem}.q"), dtype=grid.inputs[0].dtype)
        params = list(grid.inputs[1:])
        added.append(gs.Node("QuantizeLinear", ctx.fresh(f"{stem}/quantize"), {}, [out, *params],
                             [q]))
        added.append(gs.Node("DequantizeLinear", ctx.fresh(f"{stem}/dequantize"), {},
                             [q, *params], [final]))


def _one_hot_conv(ctx: RewriteContext, x: gs.Tensor, src: np.ndarray, stem: str, out: gs.Tensor,
                  added: list[gs.Node]) -> None:
    dtype = np.dtype(x.dtype) if x.dtype is not None else np.float32
    rank = len(x.shape) - 2
    weight = selection_weight(src, x.shape[1], rank, dtype)
    added.append(gs.Node("Conv", stem, {"kernel_shape": [1] * rank},
                         [x, gs.Constant(f"{stem}.w", weight)], [out]))


def fold_into_conv(ctx: RewriteContext, conv: gs.Node, x: gs.Tensor, src: np.ndarray) -> gs.Node:
    """conv(x[:, src]) as a conv of x (``weights.absorb_selection``)."""
    wide = absorb_selection(const_weight(conv.inputs[1]).values, x.shape[1], src)
    name = ctx.fresh(f"{conv.name}/unshuffled")
    weight = gs.Constant(f"{name}.w", wide)
    return gs.Node("Conv", name, dict(conv.attrs), [x, weight, *conv.inputs[2:]],
                   list(conv.outputs))
