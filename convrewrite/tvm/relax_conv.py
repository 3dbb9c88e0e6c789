"""Relax convs seen as ConvSpecs, and a mutator that visits them: the Relax side of what
``build/onnx_read.py`` and ``passes/protocol.py`` are for ONNX."""

from __future__ import annotations

from dataclasses import dataclass

from ..build.relax_read import constant_value, dims
from ..conv import ConvSpec
from ..decline import Decline
from . import require_tvm

CONV_OPS = {"relax.nn.conv1d": 1, "relax.nn.conv2d": 2, "relax.nn.conv3d": 3}
DEFAULT_LAYOUTS = {1: ("NCW", "OIW"), 2: ("NCHW", "OIHW"), 3: ("NCDHW", "OIDHW")}


def conv_rank(call) -> int | None:
    """1, 2 or 3 for a relax.nn.conv{1,2,3}d call, else None."""
    op = getattr(call, "op", None)
    return CONV_OPS.get(getattr(op, "name", None))


def static_shape(expr) -> tuple[int, ...] | None:
    """The expression's shape where every extent is static, else None."""
    found = dims(expr)
    return None if found is None or None in found else found


def conv_spec(call, name: str = "") -> ConvSpec | Decline:
    """The ConvSpec of a Relax conv call in the default (channels-first) layouts, or the reason
    it cannot be described as one."""
    rank = conv_rank(call)
    if rank is None:
        return Decline("not a conv")
    attrs = call.attrs
    if (attrs.data_layout, attrs.kernel_layout) != DEFAULT_LAYOUTS[rank] \
            or attrs.out_layout != attrs.data_layout:
        return Decline(f"layouts {attrs.data_layout}/{attrs.kernel_layout} are not channels-first")
    x_shape, w_shape = static_shape(call.args[0]), static_shape(call.args[1])
    out_shape = static_shape(call)
    if x_shape is None or w_shape is None:
        return Decline("shapes are not static")
    dtype = str(call.args[0].ty.dtype)
    groups = int(attrs.groups)
    return ConvSpec(
        name=name, op_type="Conv", in_channels=x_shape[1], out_channels=w_shape[0],
        groups=groups, kernel_shape=tuple(w_shape[2:]),
        strides=tuple(int(s) for s in attrs.strides),
        dilations=tuple(int(d) for d in attrs.dilation),
        pads=tuple(int(p) for p in attrs.padding),
        input_shape=x_shape, output_shape=out_shape, dtype=dtype)


def constant_weight(call):
    """The conv's weight as a numpy array when it is a Relax constant, else None."""
    return constant_value(call.args[1])


def conv_mutator_pass(name: str, rewrite):
    """A module pass that replaces each conv call of every Relax function by
    ``rewrite(builder, call)`` (an Expr), or keeps it where that returns None. ``builder`` is the
    mutator's BlockBuilder: ``builder.add_func`` adds PrimFuncs, ``builder.emit`` adds bindings."""
    require_tvm()
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _ConvMutator(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if conv_rank(call) is None:
                return call
            replacement = rewrite(self.builder_, call)
            return call if replacement is None else replacement

    return mutator_pass(name, _ConvMutator)


def mutator_pass(name: str, mutator_class, prepare=None):
    """A module pass running ``mutator_class(mod)`` (a PyExprMutator) over every Relax function,
    then dead-code elimination; ``prepare(mutator, func)``, when given, is called with each
    function before it is visited (to analyse it first)."""
    tvm = require_tvm()
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        mut = mutator_class(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                if prepare is not None:
                    prepare(mut, func)
                mut.builder_.update_func(gv, mut.visit_expr(func))
        return relax.transform.DeadCodeElimination()(mut.builder_.get())

    return _pass


def emit_renamed(builder, bindings, remap: dict, global_vars: dict | None = None):
    """Emit ``bindings`` ((var, value) pairs, in order) into ``builder``, each value's vars
    renamed by ``remap`` (old var -> new expression; each emitted var is added to it) and its
    global vars by ``global_vars`` (name -> GlobalVar). Returns the function renaming any later
    expression the same way (a function's result, say). For moving bindings from one function
    into another: inlining a rewritten piece, or building a region on its own."""
    require_tvm()
    from tvm.relax.expr_functor import PyExprMutator, mutator
    global_vars = global_vars or {}

    @mutator
    class _Rename(PyExprMutator):
        def visit_global_var_(self, gv):
            return global_vars.get(gv.name_hint, gv)

    rename = _Rename()
    for old, new in remap.items():
        rename.set_var_remap(old, new)
    for var, value in bindings:
        remap[var] = builder.emit(rename.visit_expr(value))
        rename.set_var_remap(var, remap[var])
    return rename.visit_expr


def free_vars(expr) -> list:
    """Every occurrence of a Relax var in ``expr`` (a var read twice is listed twice)."""
    require_tvm()
    from tvm import relax
    found = []
    relax.analysis.post_order_visit(expr, lambda e: found.append(e)
                                    if isinstance(e, relax.Var) else None)
    return found


@dataclass
class Bindings:
    """A Relax function's bindings, indexed once: for passes that match chains of bindings
    (shuffle regions, shift + 1x1 + epilogue)."""

    order: list                     # bound vars in program order
    var2val: dict                   # var -> bound value
    users: dict                     # var -> the vars whose values read it (once per read)
    returned: set                   # vars in the function's result

    @classmethod
    def of(cls, func) -> "Bindings":
        order, var2val, users = [], {}, {}
        for block in func.body.blocks:
            for binding in block.bindings:
                order.append(binding.var)
                var2val[binding.var] = binding.value
                for v in free_vars(binding.value):
                    users.setdefault(v, []).append(binding.var)
        return cls(order, var2val, users, set(free_vars(func.body.body)))

    def sole_reader(self, var):
        """The one binding var reading ``var`` when it is read exactly once (and not returned)."""
        readers = self.users.get(var, [])
        return readers[0] if len(readers) == 1 and var not in self.returned else None
