"""Dense convs over mostly-zero inputs become SparseConvs (``--sparse-input NAME``), and every
SparseConv becomes standard ONNX (``passes.sparse_conv.SparseConvLowering``).

A name given with ``--sparse-input`` (api: ``sparse_inputs=``) is one of:

* **data** -- a tensor [B, C, *S] that is mostly zero (a scattered point cloud, a masked image):
  each Conv reading it gathers the sites where any channel is non-zero (NonZero), runs a regular
  SparseConv there, and scatters the result onto a background of its bias. Exact: a regular sparse
  conv's output sites are every site some tap reaches from a non-zero input; everywhere else the
  dense conv gives the bias.
* **a mask** -- a tensor [B, 1, *S] multiplied into a Conv's input (``Conv(Mul(x, mask))``, as
  masked-image models write it): the sites are where the mask is non-zero. When the Conv's only
  reader is ``Mul(., mask)`` again, stride 1 and the kernel centred ("same" pads, odd kernel), the
  conv is submanifold: its output is only kept on the mask's sites, so it is computed only there
  and the Mul stays. Otherwise it is regular, as above. A constant mask gives constant
  coordinates, and so a precomputed rulebook.

Convs are rewritten one by one (each scatters back to dense; the sites of one tensor are found once
and shared). Grouped convs, ConvTranspose and unknown spatial sizes are declined with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx import OnnxBuilder
from ..build.onnx_read import constant_value, spec_of
from ..errors import BadInputError
from ..graph import isolate_region
from ..ops import DOMAIN
from ..ops.sparse_conv import OP_TYPE, SparseConvAttrs, SparseConvError
from ..record import Record
from ..sparse.onnx_form import IN_GRAPH_OPS, MIN_OPSET, PRECOMPUTED_OPS
from ..decline import Declined, need
from .protocol import PassResult, GraphPass, RewriteContext, detach

SPARSIFY_OPS = frozenset({"Abs", "ReduceSum", "Greater", "NonZero", "Transpose", "GatherND",
                          "ScatterND", "Shape", "Concat", "ConstantOfShape", "CastLike", "Add",
                          "Squeeze", "Equal", "Not"})


class DenseToSparse(GraphPass):
    name = "dense_to_sparse"

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        outcome = PassResult(ctx.graph)
        if not ctx.sparse_inputs:
            return outcome
        tensors = ctx.graph.tensors()
        sites: dict = {}        # (mode, tensor name) -> coordinates tensor
        gathered: dict = {}     # conv input name -> features tensor
        for name in ctx.sparse_inputs:
            if name not in tensors:
                raise BadInputError(f"--sparse-input {name!r}: the model has no tensor of that name")
            found = self._convs_of(tensors[name], ctx)
            if not found and any(n.name in ctx.emitted for n in tensors[name].outputs):
                continue                # rewritten in an earlier round
            if not found:
                raise BadInputError(f"--sparse-input {name!r}: no Conv reads it, directly or "
                                    "through Mul with it as a mask")
            for conv, mode in found:
                if not conv.outputs:        # rewritten already (named twice)
                    continue
                try:
                    outcome.add(self._rewrite(conv, tensors[name], mode, ctx, like, sites,
                                                         gathered))
                except Declined as reason:
                    outcome.recognised.append(f"{conv.name}: left dense although it reads sparse "
                                              f"{name!r} ({reason})")
        return outcome

    @staticmethod
    def _convs_of(tensor: gs.Tensor, ctx: RewriteContext) -> list[tuple[gs.Node, str]]:
        found = [(n, "data") for n in tensor.outputs if n.op == "Conv" and n.inputs[0] is tensor]
        for mul in tensor.outputs:
            if mul.op == "Mul" and mul.outputs:
                found += [(n, "mask") for n in mul.outputs[0].outputs
                          if n.op == "Conv" and n.inputs[0] is mul.outputs[0]]
        return found

    def _rewrite(self, conv: gs.Node, named: gs.Tensor, mode: str, ctx: RewriteContext,
                 like: onnx.ModelProto, sites: dict, gathered: dict) -> Record:
        spec = need(spec_of(conv))
        x = conv.inputs[0]
        rank = spec.rank
        if spec.groups != 1:
            raise Declined(f"grouped convs (group {spec.groups}) have no sparse form here")
        if rank not in (2, 3):
            raise Declined(f"{rank}-D conv; SparseConv is 2-D or 3-D")
        if spec.auto_pad not in ("NOTSET", ""):
            raise Declined(f"auto_pad {spec.auto_pad}")
        if spec.input_shape is None or any(d is None for d in spec.input_shape[1:]):
            raise Declined("the input's channels and spatial sizes must be static")
        if mode == "mask" and (named.shape is None or len(named.shape) != rank + 2
                               or named.shape[1] != 1):
            raise Declined(f"a mask must be [B, 1, spatial], {named.name!r} is {named.shape}")
        weight = constant_value(conv.inputs[1])
        if weight is None:
            raise Declined("the weight must be constant")
        bias = constant_value(conv.inputs[2]) if spec.has_bias else None
        if spec.has_bias and bias is None:
            raise Declined("the bias must be constant")
        if ctx.opset < MIN_OPSET:
            raise Declined(f"needs opset >= {MIN_OPSET} (ScatterND reduction=add), the model has "
                          f"{ctx.opset}")
        mask_value = constant_value(named) if mode == "mask" else None
        ops = SPARSIFY_OPS | (PRECOMPUTED_OPS if mask_value is not None else IN_GRAPH_OPS)
        missing = sorted(op for op in ops if not ctx.target.allows_op(op))
        if missing:
            raise Declined(f"the target's ops list lacks {', '.join(missing)}")
        spatial = tuple(spec.input_shape[2:])
        mul = self._submanifold_mul(conv, named, spec, ctx) if mode == "mask" else None
        try:
            attrs = SparseConvAttrs.create(spec.kernel_shape, spatial, spec.strides,
                                           None if mul is not None else spec.pads, spec.dilations,
                                           mul is not None)
        except SparseConvError as exc:
            raise Declined(str(exc)) from None
        region = [conv] if mul is None else [conv, mul]
        out = conv.outputs[0] if mul is None else mul.outputs[0]
        data = [x] if mode == "data" else [x, named]
        record = Record(
            node=conv.name, op=conv.op, pass_name=self.name, rules=[],
            rewrite=f"dense -> {attrs.describe()} SparseConv on the non-zero sites of "
                    f"{named.name!r} ({mode}{', constant' if mask_value is not None else ''}), "
                    "scattered back to dense",
            input_name=x.name, output_name=out.name, tolerance="reassociating",
            macs_before=spec.macs, macs_after=None, params_before=spec.params,
            params_after=spec.params, nodes_before=len(region),
            more_inputs=[named.name] if mode == "mask" else [],
            notes=["MACs after depend on how many sites are active at run time"])
        record.before = isolate_region(region, data, [out], ctx.graph, like)
        e = OnnxBuilder(ctx.fresh, f"{conv.name}/sparse")
        coords = self._sites(named, mode, mask_value, rank, e, sites)
        if x.name not in gathered:
            last = e.op("Transpose", [x], "channels_last", perm=[0, *range(2, rank + 2), 1])
            gathered[x.name] = e.op("GatherND", [last, coords], "features")
        features, sparse_coords = gathered[x.name], gs.Variable(ctx.fresh(f"{conv.name}/coords"))
        sparse_out = gs.Variable(ctx.fresh(f"{conv.name}/sparse_out"), dtype=x.dtype)
        inputs = [features, coords, conv.inputs[1], *([conv.inputs[2]] if spec.has_bias else [])]
        e.nodes.append(gs.Node(OP_TYPE, ctx.fresh(f"{conv.name}/sparse_conv"),
                               attrs.to_node_attrs(), inputs, [sparse_out, sparse_coords],
                               domain=DOMAIN))
        self._to_dense(x, sparse_out, sparse_coords, attrs, spec.out_channels,
                       None if mul is not None else bias, e, out if mul is None else None, rank,
                       mul, named)
        record.nodes_after = len(e.nodes)
        detach(region)
        ctx.graph.nodes.extend(e.nodes)
        ctx.emitted.update(n.name for n in e.nodes)
        return record

    @staticmethod
    def _submanifold_mul(conv: gs.Node, mask: gs.Tensor, spec, ctx: RewriteContext):
        """The ``Mul(conv, mask)`` that makes ``conv`` submanifold, or None."""
        readers = conv.outputs[0].outputs
        if len(readers) != 1 or any(t is conv.outputs[0] for t in ctx.graph.outputs):
            return None
        mul = readers[0]
        if mul.op != "Mul" or not any(t is mask for t in mul.inputs):
            return None
        same = tuple((k // 2) * d for k, d in zip(spec.kernel_shape, spec.dilations)) * 2
        if any(s != 1 for s in spec.strides) or any(k % 2 == 0 for k in spec.kernel_shape) \
                or tuple(spec.pads) != same:
            return None
        return mul

    @staticmethod
    def _sites(named: gs.Tensor, mode: str, value, rank: int, e: OnnxBuilder, sites: dict) -> gs.Tensor:
        """[N, 1 + D] int64 coordinates of the active sites (shared per tensor and mode)."""
        key = (mode, named.name)
        if key in sites:
            return sites[key]
        if value is not None:
            coords = e.const("sites", np.argwhere(value[:, 0] != 0).astype(np.int64))
        else:
            if mode == "mask":
                squeezed = e.op("Squeeze", [named, e.i64("axis1", [1])], "mask_sites")
                zero = e.op("CastLike", [e.const("zero", np.float32(0)), named], "zero")
                active = e.op("Not", [e.op("Equal", [squeezed, zero], "masked_out")], "active")
            else:
                size = e.op("ReduceSum", [e.op("Abs", [named], "abs"), e.i64("axis1", [1])],
                            "magnitude", keepdims=0)
                zero = e.op("CastLike", [e.const("zero", np.float32(0)), named], "zero")
                active = e.op("Greater", [size, zero], "active")
            coords = e.op("Transpose", [e.op("NonZero", [active], "sites_t")], "sites",
                          perm=[1, 0])
        sites[key] = coords
        return coords

    @staticmethod
    def _to_dense(x, values, coords, attrs: SparseConvAttrs, cout: int, bias, e: OnnxBuilder,
                  out: gs.Tensor | None, rank: int, mul: gs.Node | None, mask: gs.Tensor) -> None:
        """Scatter [M, Cout] at the SparseConv's output sites onto [B, *O, Cout] of the bias (or
        zeros), back to [B, Cout, *O]."""
        batch = e.op("Shape", [x], "batch", start=0, end=1)
        shape = e.op("Concat", [batch, e.i64("grid", [*attrs.out_spatial_shape, cout])],
                     "dense_shape", axis=0)
        background = e.zeros(shape, values, "background")
        if bias is not None:
            background = e.op("Add", [background, e.const("bias", bias)], "bias_background")
        scattered = e.op("ScatterND", [background, coords, values], "scatter")
        perm = [0, rank + 1, *range(1, rank + 1)]
        if mul is None:
            e.op("Transpose", [scattered], "dense", out=out, perm=perm)
            return
        dense = e.op("Transpose", [scattered], "dense", perm=perm)
        e.op("Mul", [dense, mask], "masked", out=mul.outputs[0])
