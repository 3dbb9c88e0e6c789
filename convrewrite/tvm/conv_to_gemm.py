"""Convs lowered to GEMM form before TVM legalizes them.

CPU (llvm): each dense 2-D conv with constant weights becomes a call of our implicit-GEMM kernel
(``kernels/conv_gemm.py``) with the weights packed at build time; its PrimFunc is marked
``kOutEWiseFusable`` so that TVM's fusion folds the following bias add, ReLU and residual add
into it, and ``ScheduleCPU`` schedules the fused function.

CUDA: each dense conv with constant weights becomes im2col (a small TE kernel, scheduled by
dlight's fallback rule) and a ``relax.matmul`` with the reshaped weights, which dlight's GPU
Matmul rule schedules (tiling, shared memory, thread binding); a 1×1 conv without stride or
padding needs no im2col, only reshapes.

Convs we have no kernel for (grouped, depthwise, non-constant weights, other dtypes) keep
TVM's own legalization.
"""

from __future__ import annotations

import numpy as np

from ..decline import Decline
from . import require_tvm
from .kernels.conv_gemm import ConvGeometry, choose_tile, conv_prim_func, i64, pack_weight
from .relax_conv import constant_weight, conv_mutator_pass, conv_rank, conv_spec

OUT_EWISE_FUSABLE = 4      # relay/relax OpPatternKind::kOutEWiseFusable


def geometry_of(spec) -> ConvGeometry:
    rank = spec.rank
    return ConvGeometry(spec.input_shape[0], spec.in_channels, spec.input_shape[2],
                        spec.input_shape[3], spec.out_channels, spec.kernel_shape, spec.strides,
                        spec.dilations, (spec.pads[0], spec.pads[1], spec.pads[rank],
                                         spec.pads[rank + 1]))


def _gemm_candidate(call):
    """(spec, weight) for a dense float32 2-D conv with constant weights, else None."""
    if conv_rank(call) != 2:
        return None
    spec = conv_spec(call)
    if isinstance(spec, Decline) or spec.groups != 1 or spec.dtype != "float32":
        return None
    weight = constant_weight(call)
    if weight is None or spec.output_shape is None:
        return None
    return spec, weight


def _lower_cpu(builder, call):
    found = _gemm_candidate(call)
    if found is None:
        return None
    tvm = require_tvm()
    from tvm import relax
    spec, weight = found
    geom = geometry_of(spec)
    tile = choose_tile(geom)
    func = conv_prim_func(geom, tile).with_attr("op_pattern", OUT_EWISE_FUSABLE)
    gv = builder.add_func(func, "conv_gemm")
    packed = relax.const(tvm.runtime.tensor(pack_weight(weight, tile)))
    return relax.call_tir(gv, [call.args[0], packed], call.ty)


def im2col_prim_func(geom: ConvGeometry, dtype: str = "float32"):
    """[N, C, H, W] → [N, C·KH·KW, OH·OW], zero padding folded in."""
    require_tvm()
    from tvm import te
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.strides, geom.dilations
    top, left, _, _ = geom.pads
    oh, ow = geom.out_size
    x = te.placeholder(i64(geom.batch, geom.in_channels, geom.height, geom.width), dtype, name="x")

    def element(n, k, p):
        c, ky, kx = k // (kh * kw), (k // kw) % kh, k % kw
        i = (p // ow) * sh + ky * dh - top
        j = (p % ow) * sw + kx * dw - left
        inside = te.all(i >= 0, i < geom.height, j >= 0, j < geom.width)
        return te.if_then_else(inside, x[n, c, i, j], te.const(0, dtype))

    cols = te.compute(i64(geom.batch, geom.in_channels * kh * kw, oh * ow), element, name="im2col")
    return te.create_prim_func([x, cols])


def _lower_cuda(builder, call):
    found = _gemm_candidate(call)
    if found is None:
        return None
    require_tvm()
    from tvm import relax
    spec, weight = found
    geom = geometry_of(spec)
    n, oh, ow = geom.batch, *geom.out_size
    depth = weight[0].size
    x = call.args[0]
    pointwise = geom.kernel == (1, 1) and geom.strides == (1, 1) and not any(geom.pads)
    if pointwise:
        cols = builder.emit(relax.op.reshape(x, (n, geom.in_channels, oh * ow)))
    else:
        gv = builder.add_func(im2col_prim_func(geom), "im2col")
        cols = builder.emit(relax.call_tir(
            gv, [x], relax.TensorType((n, depth, oh * ow), "float32")))
    w2 = relax.const(np.ascontiguousarray(weight.reshape(geom.out_channels, depth)))
    y = builder.emit(relax.op.matmul(w2, cols))
    return relax.op.reshape(y, (n, geom.out_channels, oh, ow))


def LowerConvsToGemm(kind: str):  # noqa: N802 - named like the TVM passes it sits between
    """The Relax pass lowering convs to GEMM form for ``kind`` (llvm or cuda)."""
    return conv_mutator_pass(f"convrewrite.LowerConvsToGemm.{kind}",
                             _lower_cpu if kind == "llvm" else _lower_cuda)
