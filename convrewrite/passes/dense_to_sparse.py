"""Dense convs over mostly-zero inputs become sparse regions (``--sparse-input NAME``), and every
SparseConv / SparseInverseConv becomes standard ONNX (``passes.sparse_conv.SparseConvLowering``).

A name given with ``--sparse-input`` (api: ``sparse_inputs=``) is one of:

* **data** -- a tensor [B, C, *S] that is mostly zero (a scattered point cloud, a masked image):
  its sites are where any channel is non-zero (NonZero);
* **a mask** -- a tensor [B, 1, *S] multiplied into a Conv's input (``Conv(Mul(x, mask))``, as
  masked-image models write it): its sites are where the mask is non-zero; a conv whose only
  reader is ``Mul(., mask)`` again (stride 1, kernel centred) is submanifold. A constant mask gives
  constant coordinates, and so precomputed rulebooks.

From there the region (``sparse.region``) keeps every conv and pointwise op it can on the active
sites and densifies once, where a dense op or a graph output needs a tensor. Grouped convs,
ConvTranspose and unknown spatial sizes end it, with the reason in the report.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..build.onnx import OnnxBuilder
from ..build.onnx_read import constant_value
from ..errors import BadInputError
from ..gs_graph import isolate_region
from ..record import Record
from ..sparse.onnx_form import IN_GRAPH_OPS, MIN_OPSET, PRECOMPUTED_OPS
from ..sparse.plan import BadSpec, parse_spec
from ..sparse.region import REGION_OPS, Densify, Region
from .protocol import GraphPass, PassResult, RewriteContext, detach, register_pass


@register_pass
class DenseToSparse(GraphPass):
    """Each tensor named with ``--sparse-input`` grows one sparse region (``sparse.region``)."""

    name = "dense_to_sparse"

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        if not ctx.sparse_inputs:
            return outcome
        for text in ctx.sparse_inputs:
            tensors = ctx.graph.tensors()
            try:
                name, fraction = parse_spec(text, tensors)
            except BadSpec as exc:
                raise BadInputError(str(exc)) from None
            if name not in tensors:
                raise BadInputError(f"--sparse-input {name!r}: the model has no tensor of that name")
            named = tensors[name]
            if any(n.name in ctx.emitted for n in named.outputs):
                continue                    # its region was grown in an earlier round
            mode = self._mode(named)
            if mode is None:
                raise BadInputError(f"--sparse-input {name!r}: no Conv reads it, directly or "
                                    "through Mul with it as a mask")
            try:
                record = self._region(named, mode, fraction, ctx, like, outcome)
            except Densify as reason:
                outcome.recognised.append(f"--sparse-input {name!r} left dense: {reason}")
                continue
            if record is not None:
                outcome.add(record)
        return outcome

    @staticmethod
    def _mode(named: gs.Tensor) -> str | None:
        """"data" when a Conv reads it, "mask" when a Conv reads ``Mul(x, it)``, else None."""
        if any(n.op == "Conv" and n.inputs[0] is named for n in named.outputs):
            return "data"
        for mul in named.outputs:
            if mul.op == "Mul" and mul.outputs and any(
                    n.op == "Conv" and n.inputs[0] is mul.outputs[0]
                    for n in mul.outputs[0].outputs):
                return "mask"
        return None

    def _region(self, named: gs.Tensor, mode: str, fraction: float | None, ctx: RewriteContext,
                like: onnx.ModelProto, outcome: PassResult) -> Record | None:
        if ctx.opset < MIN_OPSET:
            raise Densify(f"the sparse lowering needs opset >= {MIN_OPSET} (ScatterND "
                          f"reduction=add), the model has {ctx.opset}")
        mask_value = constant_value(named) if mode == "mask" else None
        ops = REGION_OPS | (PRECOMPUTED_OPS if mask_value is not None else IN_GRAPH_OPS)
        missing = sorted(op for op in ops if not ctx.target.allows_op(op))
        if missing:
            raise Densify(f"the target's ops list lacks {', '.join(missing)}")
        ctx.graph.toposort()
        e = OnnxBuilder(ctx.fresh, f"{named.name}/sparse")
        sample = ctx.sparse_samples.get(named.name)
        region = Region(named, mode, ctx.graph, ctx.opset, e, mask_value, fraction, sample)
        try:
            region.build()
        except Densify:
            _discard(e.nodes)
            raise
        for conv, reason in region.declined:
            outcome.recognised.append(f"{conv}: left dense although it reads sparse "
                                      f"{named.name!r} ({reason})")
        if not region.convs:
            _discard(e.nodes)
            return None
        kept = {id(n) for n in region.kept}
        taken = [n for n in region.taken if id(n) not in kept]
        exits = region.exits
        convs = ", ".join(f"{name} ({attrs.describe().split(' on ')[0]})"
                          for name, attrs in region.convs)
        where = ", ".join(t.name for t in exits) or "nowhere (nothing dense reads it)"
        record = Record(
            node=region.convs[0][0], op="Conv", pass_name=self.name, rules=[],
            rewrite=f"sparse region on the non-zero sites of {named.name!r} ({mode}"
                    f"{', constant' if mask_value is not None else ''}): {len(region.convs)} "
                    f"SparseConvs [{convs}] and {len(taken) - len(region.convs)} ops on the "
                    f"features; densified at {where}",
            input_name=region.entries[0].name, output_name=exits[0].name if exits else "",
            tolerance="reassociating", macs_before=region.macs, macs_after=None,
            nodes_before=len(taken), more_inputs=[t.name for t in region.entries[1:]],
            more_outputs=[t.name for t in exits[1:]],
            notes=["MACs after depend on how many sites are active at run time", _planned(
                fraction, mask_value, sample)] + region.notes)
        if exits:       # the original region, before the densifying nodes take its outputs
            record.before = isolate_region(region.taken, region.entries, exits, ctx.graph, like)
        region.densify()
        record.nodes_after = len(e.nodes)
        detach(taken)
        ctx.graph.nodes.extend(e.nodes)
        ctx.emitted.update(n.name for n in e.nodes)
        return record if exits else None


def _planned(fraction: float | None, mask_value, sample) -> str:
    """How the convs were chosen sparse or dense, for the record (``sparse.plan``)."""
    if fraction is None:
        return "every conv that can run sparse does (NAME:all: no cost choice)"
    if mask_value is not None:
        return "each conv sparse where cheaper than dense at the constant mask's sites"
    if sample is not None:
        return ("each conv sparse where cheaper than dense at the sites of the input given "
                "(planned for inputs like it)")
    return (f"each conv sparse where cheaper than dense, planned for {fraction:.1%} of the input's "
            "sites active, spread at random (NAME:FRACTION declares it)")


def _discard(nodes: list[gs.Node]) -> None:
    """Unhook emitted nodes that will not be used from the tensors they read."""
    detach(nodes)
