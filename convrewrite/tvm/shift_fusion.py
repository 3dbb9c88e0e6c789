"""FuseShift: a shift followed by a 1×1 conv becomes one call of the fused TIR kernel
(``shift_kernel.py``), so the shifted tensor is never written.

The pass finds, in each Relax function, a depthwise ``conv2d`` that is a shift — recognised by
the ONNX pass's own reader (``passes.shift.spec_shift_offsets``: depthwise, one-hot kernels of
value 1, stride 1, size-keeping pads, read by ``ops.shift.one_hot_offsets``) — whose output is
read only by a dense 1×1 conv (``passes.shift.is_dense_pointwise``, stride 1, constant weight,
float32), and replaces the pair by ``call_tir(shift_conv, x, offsets, packed weight)``. The
shift's own output has no other reader, so it disappears (dead-code elimination).

No cost choice is made here: on the CPU the fused kernel does the 1×1 conv's MACs and nothing
more, so it is never dearer than the pair (``plan_variants.plan_shift``'s forms are what an
accelerator runs; the TVM build runs the rewritten model on this CPU). The fused kernel comes
scheduled and is opaque to TVM's fusion: the 1×1 conv's bias add, ReLU and residual add run
after it as one fused elementwise function (our plain conv kernel folds them into its
write-back; this one does not yet).
"""

from __future__ import annotations

import numpy as np

from ..passes.shift import is_dense_pointwise, spec_shift_offsets
from . import require_tvm
from .relax_conv import constant_weight, conv_rank, conv_spec, mutator_pass


def shift_offsets_of(call) -> np.ndarray | None:
    """The [C, 2] offsets of a Relax float32 conv2d that is a shift, else None."""
    if conv_rank(call) != 2:
        return None
    spec, weight = conv_spec(call), constant_weight(call)
    if isinstance(spec, str) or weight is None or spec.dtype != "float32":
        return None
    return spec_shift_offsets(spec, weight)


def fusable_pointwise(call) -> bool:
    """A dense float32 1×1 conv2d, stride 1, constant weight, static shapes: what the fused
    kernel computes after the shift."""
    if conv_rank(call) != 2:
        return False
    spec = conv_spec(call)
    return not isinstance(spec, str) and is_dense_pointwise(spec) and spec.dtype == "float32" \
        and all(s == 1 for s in spec.strides) and spec.output_shape is not None \
        and constant_weight(call) is not None


def find_shift_pairs(func) -> list[tuple]:
    """(1×1 conv call, shift call, offsets) for each shift read only by a fusable 1×1 conv."""
    require_tvm()
    from tvm import relax
    var2val = relax.analysis.get_var2val(func)
    uses: dict = {}

    def count(expr):
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1

    relax.analysis.post_order_visit(func.body, count)
    pairs = []
    for value in var2val.values():
        if not isinstance(value, relax.Call) or not fusable_pointwise(value):
            continue
        shifted = value.args[0]
        producer = var2val.get(shifted) if isinstance(shifted, relax.Var) else None
        if producer is None or uses.get(shifted, 0) != 1:
            continue
        offsets = shift_offsets_of(producer)
        if offsets is not None:
            pairs.append((value, producer, offsets))
    return pairs


def shift_pairs(mod) -> int:
    """How many pairs FuseShift will fuse in ``mod``."""
    require_tvm()
    from tvm import relax
    return sum(len(find_shift_pairs(f)) for _, f in mod.functions_items()
               if isinstance(f, relax.Function))


def emit_fused(builder, x, offsets: np.ndarray, pointwise):
    """``call_tir`` of the fused kernel computing ``pointwise(shift(x))``."""
    tvm = require_tvm()
    from tvm import relax
    from .cpu_conv import pack_weight
    from .shift_kernel import shift_conv_geometry, shift_conv_prim_func, shift_tables
    spec = conv_spec(pointwise)
    n, c, h, w = spec.input_shape
    func, tile = shift_conv_prim_func(shift_conv_geometry(n, c, h, w, spec.out_channels), offsets)
    gv = builder.add_func(func, "shift_conv")
    consts = [relax.const(tvm.runtime.tensor(a)) for a in (
        *shift_tables(offsets, w), pack_weight(constant_weight(pointwise), tile))]
    return relax.call_tir(gv, [x, *consts], pointwise.ty)


def FuseShift():  # noqa: N802 - a tvm.transform pass, named like TVM's own
    """Module pass: each shift + 1×1 conv pair becomes one call of the fused kernel."""
    require_tvm()
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _FuseMutator(PyExprMutator):
        pairs: list = []

        def visit_call_(self, call):
            for pointwise, shift, offsets in self.pairs:
                if call.same_as(pointwise):
                    return emit_fused(self.builder_, self.visit_expr(shift.args[0]), offsets,
                                      pointwise)
            return super().visit_call_(call)

    def prepare(mut, func):
        mut.pairs = find_shift_pairs(func)

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
