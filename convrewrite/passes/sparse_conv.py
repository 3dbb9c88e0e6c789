"""SparseConv and SparseInverseConv nodes to standard ONNX (``sparse.onnx_form``, in the form
``sparse.forms`` chooses), one Record each.

The rulebook form is chosen per node and recorded: precomputed when the coordinates are constant
in the graph (numpy, now), else built in the graph from the run-time coordinates. Convs that share
coordinates and rulebook attributes share one rulebook (spconv's ``indice_key``), in either form.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx import OnnxBuilder
from ..build.onnx_read import constant_value
from ..decline import Decline
from ..gs_graph import isolate_region
from ..ops import DOMAIN
from ..ops.sparse_conv import (INVERSE_OP_TYPE, OP_TYPE, SparseConvAttrs, SparseConvError,
                               check_weight, node_attrs, tap_weights)
from ..ops.sparse_conv import optional_input
from ..record import Record
from ..rules import Violation, rules_named
from ..sparse.forms import choose_form
from ..sparse.onnx_form import (IN_GRAPH_OPS, MIN_OPSET, PRECOMPUTED_OPS, GraphRulebook,
                                SharedConstants, emit_form, gather_gemm_scatter, graph_form,
                                graph_inverse_rulebook, graph_rulebook, implicit_gemm_graph,
                                precomputed_rulebook, reversed_rulebook)
from ..sparse.rulebook import build_inverse_rulebook, build_rulebook, reverse
from .protocol import GraphPass, PassResult, RewriteContext, lower_each, register_pass


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
OP_TYPES = (OP_TYPE, INVERSE_OP_TYPE)


def lowerable(node: gs.Node) -> bool:
    return node.op in OP_TYPES and node.domain == DOMAIN and bool(node.outputs)


def _digest(value: np.ndarray) -> tuple:
    return (hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest(), value.shape,
            str(value.dtype))


@dataclass
class _Shared:
    """One rulebook and what was made from it, shared by every layer with the same sites, kernel
    and stride (spconv's ``indice_key``)."""

    rulebook: GraphRulebook
    in_coords: gs.Tensor | None = None          # graph form: the sites it was built from
    reversed_from: "_Shared | None" = None      # an inverse conv's: the strided conv's rulebook
    plans: dict = field(default_factory=dict)   # precomputed: the forms' plans (forms.py)
    consts: SharedConstants = field(default_factory=SharedConstants)


@dataclass
class _Conv:
    """One SparseConv / SparseInverseConv node, read and checked."""

    node: gs.Node
    attrs: SparseConvAttrs
    inverse: bool
    features: gs.Tensor
    coords: gs.Tensor               # the input sites
    out_coords: gs.Tensor | None    # inverse: the given output sites
    weight: np.ndarray
    bias: np.ndarray | None

    @property
    def site_inputs(self) -> list[gs.Tensor]:
        return [self.coords] + ([self.out_coords] if self.out_coords is not None else [])


def drop_unread_checks(records: list[Record], graph: gs.Graph) -> None:
    """Output coordinates that nothing reads any more (a strided conv's sites, read only by the
    inverse convs that reuse its rulebook) leave the graph: compare them end to end only."""
    tensors = graph.tensors()
    outputs = {t.name for t in graph.outputs}
    for record in records:
        gone = [n for n in record.more_outputs
                if n not in outputs and not (n in tensors and tensors[n].outputs)]
        if gone:
            record.more_outputs = [n for n in record.more_outputs if n not in gone]
            record.notes.append(f"{', '.join(gone)} not compared here: only inverse convs read "
                                "it, which reuse this conv's rulebook (checked end to end)")


class SparseConvLowerer:
    """Lowers SparseConv and SparseInverseConv nodes one by one; rulebooks are shared between the
    nodes it lowers, and an inverse conv reuses the rulebook of the strided conv it inverts."""

    def __init__(self):
        self.shared: dict = {}
        self.built = 0                  # rulebooks built (the rest were shared)

    def lower(self, node: gs.Node, ctx, like: onnx.ModelProto) -> Record | Decline:
        """Replace ``node`` in ``ctx.graph`` and return its Record, or the reason it cannot."""
        conv = self._read(node)
        if isinstance(conv, Decline):
            return conv
        if ctx.opset < MIN_OPSET:
            return Decline(f"the lowering needs opset >= {MIN_OPSET} (ScatterND reduction=add); "
                           f"the model imports opset {ctx.opset}")
        values = [constant_value(t) for t in conv.site_inputs]
        form = "precomputed" if all(v is not None for v in values) else "graph"
        missing = sorted(op for op in (PRECOMPUTED_OPS if form == "precomputed" else IN_GRAPH_OPS)
                         if not ctx.target.allows_op(op))
        if missing:
            return Decline(f"the target's ops list lacks {', '.join(missing)}")
        outputs = used_outputs(node, ctx.graph) if not conv.inverse else [node.outputs[0]]
        if conv.inverse and form == "graph":
            ctx.graph.toposort()    # its check may include the strided conv's lowered site nodes
        e = OnnxBuilder(ctx.fresh, node.name)
        shared, reused = self._rulebook(conv, values, e)
        rb = shared.rulebook
        checked, notes = outputs[:1], list(rb.notes)
        if len(outputs) > 1:
            checked, more = self._out_coords(conv, rb, reused, outputs, e, ctx)
            notes += more
        taps = tap_weights(conv.weight)
        cin, cout = conv.weight.shape[1], conv.weight.shape[0]
        if rb.rulebook is not None:
            plan, why = choose_form(rb.rulebook, cin, cout, shared.plans)
            emit_form(conv.features, taps, conv.bias, plan, outputs[0], e, shared.consts)
            macs_before, macs_after = rb.rulebook.macs(cin, cout), plan.macs(cin, cout)
            how = f"{plan.name} form ({why})"
        else:
            kind, how = graph_form(rb)
            if kind == "implicit":
                implicit_gemm_graph(conv.features, taps, conv.bias, rb, outputs[0], e)
                how += f" over {len(taps)} taps"
            else:
                gather_gemm_scatter(conv.features, taps, conv.bias, rb, outputs[0], e)
                taps_used = sum(p is not None for p in rb.pairs) + (rb.centre is not None)
                how += f" over {taps_used} taps"
            macs_before = macs_after = None
        record = Record(
            node=node.name, op=node.op, pass_name=PASS_NAME,
            rules=[Violation("ops", f"{DOMAIN}.{node.op}", "standard ONNX",
                             f"our domain's {node.op} runs on no engine")],
            rewrite=f"{conv.attrs.describe(conv.inverse)}: {self._describe(conv, rb, reused)}; "
                    f"{how}",
            input_name=conv.features.name, output_name=outputs[0].name, tolerance="reassociating",
            macs_before=macs_before, macs_after=macs_after, params_before=int(conv.weight.size),
            params_after=int(conv.weight.size), nodes_after=len(e.nodes),
            more_outputs=[t.name for t in checked[1:]],
            more_inputs=[t.name for t in self._site_data(conv, shared, form)])
        record.notes += notes
        # the region reads the coordinates the rulebook is built from (through Identities); an
        # inverse conv sharing its strided conv's in-graph rulebook reads that conv's input
        # sites, and its original computes the coarse sites from them as the strided conv does
        data = [conv.features, *self._site_data(conv, shared, form)]
        record.before = isolate_region([node], data, checked, ctx.graph, like)
        node.inputs.clear()
        node.outputs.clear()
        ctx.graph.nodes.extend(e.nodes)
        return record

    @staticmethod
    def _site_data(conv: _Conv, shared: _Shared, form: str) -> list[gs.Tensor]:
        if form != "graph":
            return []
        if shared.reversed_from is not None:
            return [_root(conv.out_coords)]
        return [_root(t) for t in conv.site_inputs]

    @staticmethod
    def _read(node: gs.Node) -> _Conv | Decline:
        attrs = node_attrs(node)
        inverse = node.op == INVERSE_OP_TYPE
        if inverse and attrs.submanifold:
            raise SparseConvError(f"{node.op} {node.name!r}: an inverse conv is never submanifold")
        need = 4 if inverse else 3
        if len(node.inputs) < need:
            what = "features, coordinates, out_coordinates and W" if inverse else \
                "features, coordinates and W"
            raise SparseConvError(f"{node.op} {node.name!r}: needs {what}")
        weight = constant_value(node.inputs[need - 1])
        if weight is None:
            return Decline("the weight W must be a constant")
        try:
            check_weight(weight, attrs)
        except SparseConvError as exc:
            raise SparseConvError(f"{node.op} {node.name!r}: {exc}") from None
        bias_in = optional_input(node, need)
        bias = None if bias_in is None else constant_value(bias_in)
        if bias_in is not None and bias is None:
            return Decline("the bias B must be a constant")
        return _Conv(node, attrs, inverse, node.inputs[0], node.inputs[1],
                     node.inputs[2] if inverse else None, weight, bias)

    def _rulebook(self, conv: _Conv, values: list, e: OnnxBuilder) -> tuple[_Shared, bool]:
        """The shared rulebook for this conv (built now, or reused), and whether it was reused."""
        attrs, node = conv.attrs, conv.node
        precomputed = all(v is not None for v in values)
        if precomputed:
            key = ("precomputed", conv.inverse, *map(_digest, values), attrs)
        else:
            key = ("graph", conv.inverse, *(_root(t).name for t in conv.site_inputs), attrs)
        if key in self.shared:
            return self.shared[key], True
        try:
            entry = self._reversed(conv, values, precomputed, e)
            if entry is not None:
                self.shared[key] = entry
                return entry, True
            self.built += 1
            if precomputed and conv.inverse:
                rb = precomputed_rulebook(build_inverse_rulebook(values[0], values[1], attrs), e)
            elif precomputed:
                rb = precomputed_rulebook(build_rulebook(values[0], attrs), e)
            elif conv.inverse:
                rb = graph_inverse_rulebook(_root(conv.coords), _root(conv.out_coords), attrs, e)
            else:
                rb = graph_rulebook(_root(conv.coords), attrs, e)
        except SparseConvError as exc:
            raise SparseConvError(f"{node.op} {node.name!r}: {exc}") from None
        if precomputed:
            rb.notes.append("rulebook precomputed at rewrite time: the coordinates are constant, "
                            f"so its {rb.rulebook.num_pairs} pairs are initializers")
        else:
            rb.notes.append("rulebook built in the graph: the coordinates arrive at run time "
                            "(they must be in range and distinct; nothing checks at run time)")
        entry = _Shared(rb, None if precomputed else _root(conv.coords))
        self.shared[key] = entry
        return entry, False

    def _reversed(self, conv: _Conv, values: list, precomputed: bool, e: OnnxBuilder
                  ) -> _Shared | None:
        """An inverse conv onto the input sites of a strided conv already lowered here, from that
        conv's output sites, with the same kernel, stride, padding and dilation: that conv's
        rulebook, read backwards."""
        if not conv.inverse:
            return None
        if precomputed:
            forward = self.shared.get(("precomputed", False, _digest(values[1]), conv.attrs))
            if forward is None or not np.array_equal(forward.rulebook.rulebook.out_coords,
                                                     values[0]):
                return None
            rb = precomputed_rulebook(reverse(forward.rulebook.rulebook, values[1]), e)
        else:
            forward = self.shared.get(("graph", False, _root(conv.out_coords).name, conv.attrs))
            if forward is None or _root(forward.rulebook.out_coords) is not _root(conv.coords):
                return None
            rb = reversed_rulebook(forward.rulebook, _root(conv.out_coords), e)
        rb.notes.append("rulebook of the strided conv it inverts, read backwards (built once)")
        return _Shared(rb, reversed_from=forward)

    @staticmethod
    def _out_coords(conv: _Conv, rb: GraphRulebook, reused: bool, outputs, e: OnnxBuilder, ctx
                    ) -> tuple[list, list[str]]:
        """Wire the output coordinates; which outputs the local check compares, and notes."""
        attrs = conv.attrs
        if rb.form == "graph" and not attrs.submanifold and not reused:
            # the in-graph sites are the output itself: later rulebooks build on it, so it
            # stays in the graph and is compared with the reference's sites
            producer = next(n for n in e.nodes if n.outputs and n.outputs[0] is rb.out_coords)
            producer.outputs = [outputs[1]]
            rb.out_coords = outputs[1]
            return outputs, []
        e.op("Identity", [rb.out_coords], "out_coords", out=outputs[1])
        if any(t is outputs[1] for t in ctx.graph.outputs) or \
                any(not lowerable(n) for n in outputs[1].outputs):
            return outputs, []
        return outputs[:1], ["output coordinates not compared here: only other sparse convs "
                             "read them, whose rulebooks are built from " +
                             ("the same input coordinates" if attrs.submanifold else
                              "the same constant sites") + " (checked end to end)"]

    @staticmethod
    def _describe(conv: _Conv, rb: GraphRulebook, reused: bool) -> str:
        if rb.rulebook is not None:
            how = f"precomputed rulebook ({rb.rulebook.describe()})"
        elif conv.inverse and rb.lookups:
            how = ("in-graph rulebook (candidate coarse keys looked up among the coarse sites: "
                   f"{rb.lookups})")
        elif conv.inverse:
            how = "in-graph rulebook (read backwards from the strided conv's)"
        elif conv.attrs.submanifold:
            how = f"in-graph rulebook (lookup of key + tap offset: {rb.lookups})"
        else:
            how = f"in-graph rulebook (output sites and their inputs: {rb.lookups})"
        return how + (", shared" if reused else "")


@register_pass
class SparseConvLowering(GraphPass):
    """Every SparseConv / SparseInverseConv to standard ONNX; rulebooks shared between convs of
    the same sites, kernel and stride."""

    name = PASS_NAME
    fixes = rules_named("ops")

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        lowerer = SparseConvLowerer()
        outcome = lower_each(self.name, [n for n in ctx.graph.nodes if lowerable(n)],
                             lambda node: lowerer.lower(node, ctx, like), ctx.graph)
        drop_unread_checks(outcome.records, ctx.graph)
        return outcome
