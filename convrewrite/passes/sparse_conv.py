"""SparseConv nodes to standard ONNX (``sparse.onnx_form``), one Record each.

The rulebook form is chosen per node and recorded: precomputed when the coordinates are constant
in the graph (numpy, now), else built in the graph from the run-time coordinates. Convs that share
coordinates and rulebook attributes share one rulebook (spconv's ``indice_key``), in either form.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx import OnnxBuilder
from ..build.onnx_read import constant_value
from ..decline import Decline
from ..graph import isolate_region
from ..rules import Violation
from ..ops import DOMAIN
from ..ops.sparse_conv import (OP_TYPE, SparseConvAttrs, SparseConvError, check_weight, node_attrs,
                               optional_input, tap_weights)
from ..record import Record
from ..sparse.onnx_form import (IN_GRAPH_OPS, MIN_OPSET, PRECOMPUTED_OPS, GraphRulebook,
                                gather_gemm_scatter, graph_rulebook, precomputed_rulebook)
from ..sparse.rulebook import build_rulebook
from .protocol import PassResult, GraphPass, RewriteContext, lower_each


def used_outputs(node: gs.Node, graph: gs.Graph) -> list[gs.Tensor]:
    """The node's outputs that anything reads (features always)."""
    outs = [node.outputs[0]]
    if len(node.outputs) > 1 and node.outputs[1].name and \
            (node.outputs[1].outputs or any(t is node.outputs[1] for t in graph.outputs)):
        outs.append(node.outputs[1])
    return outs


def _root(tensor: gs.Tensor) -> gs.Tensor:
    while len(tensor.inputs) == 1 and tensor.inputs[0].op == "Identity":
        tensor = tensor.inputs[0].inputs[0]
    return tensor


PASS_NAME = "sparse_conv"


def lowerable(node: gs.Node) -> bool:
    return node.op == OP_TYPE and node.domain == DOMAIN and bool(node.outputs)


class SparseConvLowerer:
    """Lowers SparseConv nodes one by one; rulebooks are shared between the nodes it lowers."""

    def __init__(self):
        self.shared: dict = {}

    def lower(self, node: gs.Node, ctx, like: onnx.ModelProto) -> Record | Decline:
        """Replace ``node`` in ``ctx.graph`` and return its Record, or the reason it cannot."""
        return self._lower(node, ctx, like, self.shared)

    def _lower(self, node: gs.Node, ctx, like: onnx.ModelProto, shared: dict) -> Record | Decline:
        attrs = node_attrs(node)
        if len(node.inputs) < 3:
            raise SparseConvError(f"{OP_TYPE} {node.name!r}: needs features, coordinates and W")
        features, coords = node.inputs[0], node.inputs[1]
        weight = constant_value(node.inputs[2])
        if weight is None:
            return Decline("the weight W must be a constant")
        try:
            check_weight(weight, attrs)
        except SparseConvError as exc:
            raise SparseConvError(f"{OP_TYPE} {node.name!r}: {exc}") from None
        bias_in = optional_input(node, 3)
        bias = None if bias_in is None else constant_value(bias_in)
        if bias_in is not None and bias is None:
            return Decline("the bias B must be a constant")
        if ctx.opset < MIN_OPSET:
            return Decline(f"the lowering needs opset >= {MIN_OPSET} (ScatterND reduction=add); "
                           "the model "
                    f"imports opset {ctx.opset}")
        coords_value = constant_value(coords)
        form = "precomputed" if coords_value is not None else "graph"
        missing = sorted(op for op in (PRECOMPUTED_OPS if coords_value is not None else IN_GRAPH_OPS)
                         if not ctx.target.allows_op(op))
        if missing:
            return Decline(f"the target's ops list lacks {', '.join(missing)}")
        outputs = used_outputs(node, ctx.graph)
        e = OnnxBuilder(ctx.fresh, node.name)
        rb, reused = self._rulebook(node, attrs, coords, coords_value, e, shared)
        checked, notes = outputs[:1], list(rb.notes)
        if len(outputs) > 1:
            if rb.form == "graph" and not attrs.submanifold and not reused:
                # the in-graph sites are the output itself: later rulebooks build on it, so it
                # stays in the graph and is compared with the reference's sites
                producer = next(n for n in e.nodes if n.outputs and n.outputs[0] is rb.out_coords)
                producer.outputs = [outputs[1]]
                rb.out_coords = outputs[1]
                checked = outputs
            else:
                e.op("Identity", [rb.out_coords], "out_coords", out=outputs[1])
                if any(t is outputs[1] for t in ctx.graph.outputs) or \
                        any(not lowerable(n) for n in outputs[1].outputs):
                    checked = outputs
                else:
                    notes.append("output coordinates not compared here: only other SparseConvs "
                                 "read them, whose rulebooks are built from " +
                                 ("the same input coordinates" if attrs.submanifold else
                                  "the same constant sites") + " (checked end to end)")
        taps = tap_weights(weight)
        gather_gemm_scatter(features, taps, bias, rb, outputs[0], e)
        cin, cout = weight.shape[1], weight.shape[0]
        macs = None if rb.rulebook is None else rb.rulebook.macs(cin, cout)
        record = Record(
            node=node.name, op=node.op, pass_name=PASS_NAME,
            rules=[Violation("ops", f"{DOMAIN}.{OP_TYPE}", "standard ONNX",
                             "our domain's SparseConv runs on no engine")],
            rewrite=self._describe(attrs, rb, reused), input_name=features.name,
            output_name=outputs[0].name, tolerance="reassociating", macs_before=macs,
            macs_after=macs, params_before=int(weight.size), params_after=int(weight.size),
            nodes_after=len(e.nodes), more_outputs=[t.name for t in checked[1:]],
            more_inputs=[_root(coords).name] if form == "graph" else [])
        record.notes += notes
        # the region reads the coordinates the rulebook is built from (through Identities)
        data = [features] if form == "precomputed" else [features, _root(coords)]
        record.before = isolate_region([node], data, checked, ctx.graph, like)
        node.inputs.clear()
        node.outputs.clear()
        ctx.graph.nodes.extend(e.nodes)
        return record

    @staticmethod
    def _rulebook(node: gs.Node, attrs: SparseConvAttrs, coords: gs.Tensor,
                  value: np.ndarray | None, e: OnnxBuilder, shared: dict) -> tuple[GraphRulebook, bool]:
        if value is not None:
            digest = hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
            key = ("precomputed", digest, value.shape, str(value.dtype), attrs)
        else:
            key = ("graph", _root(coords).name, attrs)
            coords = _root(coords)
        if key in shared:
            return shared[key], True
        if value is not None:
            try:
                rb = precomputed_rulebook(build_rulebook(value, attrs), e)
            except SparseConvError as exc:
                raise SparseConvError(f"{OP_TYPE} {node.name!r}: {exc}") from None
            rb.notes.append("rulebook precomputed at rewrite time: the coordinates are constant, "
                            f"so its {rb.rulebook.num_pairs} pairs are initializers")
        else:
            rb = graph_rulebook(coords, attrs, e)
            rb.notes.append("rulebook built in the graph: the coordinates arrive at run time "
                            "(they must be in range and distinct; nothing checks at run time)")
        shared[key] = rb
        return rb, False

    @staticmethod
    def _describe(attrs: SparseConvAttrs, rb: GraphRulebook, reused: bool) -> str:
        if rb.rulebook is not None:
            how = f"precomputed rulebook ({rb.rulebook.describe()})"
        elif attrs.submanifold:
            how = "in-graph rulebook (Unique lookup of key + tap offset)"
        else:
            how = "in-graph rulebook (candidate output keys, sorted Unique)"
        taps = sum(p is not None for p in rb.pairs) + (rb.centre is not None)
        return (f"{attrs.describe()}: {how}{', shared' if reused else ''}; "
                f"Gather + MatMul + ScatterND(add) over {taps} taps")


class SparseConvLowering(GraphPass):
    """Every SparseConv to standard ONNX; rulebooks shared between convs of the same sites."""

    name = PASS_NAME

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        lowerer = SparseConvLowerer()
        return lower_each(self.name, [n for n in ctx.graph.nodes if lowerable(n)],
                          lambda node: lowerer.lower(node, ctx, like), ctx.graph)
