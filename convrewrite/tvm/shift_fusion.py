"""FuseShift: a shift followed by a 1×1 conv becomes one call of the fused TIR kernel
(``kernels/shift_conv.py``), so the shifted tensor is never written.

The pass finds, in each Relax function, a depthwise ``conv2d`` that is a shift — recognised by
the ONNX pass's own reader (``passes.shift.spec_shift_offsets``: depthwise, one-hot kernels of
value 1, stride 1, size-keeping pads, read by ``ops.shift.one_hot_offsets``) — whose output is
read only by a dense 1×1 conv (``passes.shift.is_dense_pointwise``, stride 1, constant weight,
float32), and replaces the pair by ``call_tir(shift_conv, x, offsets, packed weight)``. The
shift's own output has no other reader, so it disappears (dead-code elimination).

No cost choice is made here: on the CPU the fused kernel does the 1×1 conv's MACs and nothing
more, so it is never dearer than the pair (``plan.shift.plan_shift``'s forms are what an
accelerator runs; the TVM build runs the rewritten model on this CPU). The fused kernel comes
scheduled and is opaque to TVM's fusion, so the elementwise chain after the 1×1 conv — a
per-channel constant add (the bias), an add of a same-shape tensor (the residual), a ReLU, each
at most once, each intermediate read once — is folded into the kernel's write-back here
(``epilogue_chain``): ShiftResNet's reduce conv, bias, shortcut add and ReLU are one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decline import Decline
from ..passes.shift import is_dense_pointwise, spec_shift_offsets
from . import require_tvm
from .kernels.conv_gemm import pack_weight
from .kernels.shift_conv import shift_conv_geometry, shift_conv_prim_func, shift_tables
from .relax_conv import (Bindings, constant_weight, conv_rank, conv_spec, mutator_pass,
                         static_shape)


def shift_offsets_of(call) -> np.ndarray | None:
    """The [C, 2] offsets of a Relax float32 conv2d that is a shift, else None."""
    if conv_rank(call) != 2:
        return None
    spec, weight = conv_spec(call), constant_weight(call)
    if isinstance(spec, Decline) or weight is None or spec.dtype != "float32":
        return None
    return spec_shift_offsets(spec, weight)


def fusable_pointwise(call) -> bool:
    """A dense float32 1×1 conv2d, stride 1, constant weight, static shapes: what the fused
    kernel computes after the shift."""
    if conv_rank(call) != 2:
        return False
    spec = conv_spec(call)
    return not isinstance(spec, Decline) and is_dense_pointwise(spec) and spec.dtype == "float32" \
        and all(s == 1 for s in spec.strides) and spec.output_shape is not None \
        and constant_weight(call) is not None


@dataclass
class FusedSite:
    """One fused call: the chain ``shift -> 1x1 conv -> epilogue`` ending at ``last``."""

    last: object                    # the call the fused call replaces
    pointwise: object
    shift: object
    offsets: np.ndarray
    steps: tuple[str, ...] = ()
    bias: np.ndarray | None = None
    residual: object = None         # the residual operand (a Relax expression)


def find_shift_pairs(func) -> list[FusedSite]:
    """Each shift read only by a fusable 1×1 conv, with the epilogue that follows the conv."""
    require_tvm()
    from tvm import relax
    bindings = Bindings.of(func)
    sites = []
    for var in bindings.order:
        value = bindings.var2val[var]
        if not isinstance(value, relax.Call) or not fusable_pointwise(value):
            continue
        shifted = value.args[0]
        producer = bindings.var2val.get(shifted) if isinstance(shifted, relax.Var) else None
        if producer is None or bindings.sole_reader(shifted) is None:
            continue
        offsets = shift_offsets_of(producer)
        if offsets is not None:
            sites.append(epilogue_chain(FusedSite(value, value, producer, offsets), var,
                                        bindings))
    return sites


def epilogue_chain(site: FusedSite, var, bindings: Bindings) -> FusedSite:
    """``site`` grown over the bias add, residual add and ReLU that follow its conv."""
    shape = static_shape(site.pointwise)
    while (nxt := bindings.sole_reader(var)) is not None:
        value = bindings.var2val[nxt]
        name = getattr(getattr(value, "op", None), "name", None)
        step, operand = None, None
        if name == "relax.nn.relu" and "relu" not in site.steps:
            step = "relu"
        elif name == "relax.add" and len(value.args) == 2:
            other = value.args[1] if value.args[0].same_as(var) else value.args[0]
            bias = _channel_constant(other, bindings.var2val, shape)
            if bias is not None and "bias" not in site.steps:
                step, operand = "bias", bias
            elif not other.same_as(var) and static_shape(other) == shape \
                    and str(other.ty.dtype) == "float32" and "residual" not in site.steps:
                step, operand = "residual", other
        if step is None or static_shape(value) != shape:
            break
        site.steps += (step,)
        if step == "bias":
            site.bias = operand
        elif step == "residual":
            site.residual = operand
        site.last, var = value, nxt
    return site


def _channel_constant(expr, var2val: dict, shape) -> np.ndarray | None:
    """A [Co] float32 vector when ``expr`` broadcasts as [1, Co, 1, 1] or [Co, 1, 1] and is a
    constant or a reshape of one (the frontend's bias)."""
    tvm = require_tvm()
    from tvm import relax
    co = shape[1]
    if static_shape(expr) not in ((1, co, 1, 1), (co, 1, 1)):
        return None
    if isinstance(expr, relax.Var) and expr in var2val:
        value = var2val[expr]
        if getattr(getattr(value, "op", None), "name", None) == "relax.reshape":
            expr = value.args[0]
    if not isinstance(expr, tvm.ir.expr.Constant):
        return None
    array = expr.value.numpy()
    if array.dtype != np.float32 or array.size != co:
        return None
    return np.ascontiguousarray(array.reshape(co))


def shift_pairs(mod) -> int:
    """How many pairs FuseShift will fuse in ``mod``."""
    require_tvm()
    from tvm import relax
    return sum(len(find_shift_pairs(f)) for _, f in mod.functions_items()
               if isinstance(f, relax.Function))


def emit_fused(builder, x, site: FusedSite, residual=None):
    """``call_tir`` of the fused kernel computing the site's chain on ``x`` (``residual``: the
    visited residual operand)."""
    tvm = require_tvm()
    from tvm import relax
    pointwise = site.pointwise
    spec = conv_spec(pointwise)
    n, c, h, w = spec.input_shape
    func, tile = shift_conv_prim_func(shift_conv_geometry(n, c, h, w, spec.out_channels),
                                      site.offsets, epilogue=site.steps)
    gv = builder.add_func(func, "shift_conv")
    consts = [relax.const(tvm.runtime.tensor(a)) for a in (
        *shift_tables(site.offsets, w), pack_weight(constant_weight(pointwise), tile))]
    if site.bias is not None:
        consts.append(relax.const(tvm.runtime.tensor(site.bias)))
    extra = [residual] if site.residual is not None else []
    return relax.call_tir(gv, [x, *consts, *extra], site.last.ty)


def FuseShift():  # noqa: N802 - a tvm.transform pass, named like TVM's own
    """Module pass: each shift + 1×1 conv pair (and the epilogue after it) becomes one call of
    the fused kernel."""
    require_tvm()
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _FuseMutator(PyExprMutator):
        sites: list = []

        def visit_call_(self, call):
            for site in self.sites:
                if call.same_as(site.last):
                    residual = None if site.residual is None else self.visit_expr(site.residual)
                    return emit_fused(self.builder_, self.visit_expr(site.shift.args[0]), site,
                                      residual)
            return super().visit_call_(call)

    def prepare(mut, func):
        mut.sites = find_shift_pairs(func)

    return mutator_pass("convrewrite.FuseShift", _FuseMutator, prepare)


def fused_calls(mod) -> int:
    """How many calls of the fused kernel ``mod``'s functions make (for tests and reports)."""
    require_tvm()
    from tvm import relax
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == "relax.call_tir" \
                and expr.args[0].name_hint.startswith("shift_conv"):
            found.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return len(found)
