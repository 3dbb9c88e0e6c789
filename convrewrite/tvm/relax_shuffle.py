"""ShuffleRemoval as a Relax module pass: channel shuffles without their 5-D tensors.

The same job as ``passes/shuffle.py`` on Relax: a region of data movement ops (reshape,
permute_dims, split and its items, strided_slice, take, squeeze, expand_dims) that starts at a
channels-first tensor and makes a tensor of higher rank than the target handles (or a
permute_dims where the target has no Transpose) only picks channels of that tensor. Which
channels is found the way the ONNX pass finds them — by running the region on probe inputs (a
channel-index ramp and random data), here built and run on TVM itself, so its own semantics of
each op decide — and each output takes the form ``plan.selection.plan_selection`` chooses, with
the ONNX pass's cost inputs (``plan.selection.fold_growth``) and weight math
(``weights.selection_weight`` / ``absorb_selection``): folded into the dense convs that read
it, a ``take`` on the channel axis, or a one-hot 1x1 conv.

Run ``relax.transform.FoldConstant`` first when the frontend left index arithmetic unfolded
(the pass does this itself); a region that reads any other computed tensor is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..build.relax import conv_like
from ..decline import Decline
from ..weights import absorb_selection, selection_weight
from ..passes.shuffle import decode_selections, probe_inputs
from ..plan.selection import fold_growth, plan_selection
from ..target import Target, load_target
from . import require_tvm
from .build import build
from .run import run_executable
from .relax_conv import (Bindings, constant_weight, conv_rank, conv_spec, emit_renamed,
                         free_vars,
                         mutator_pass, static_shape)

MOVEMENT_OPS = {"relax.reshape", "relax.permute_dims", "relax.split", "relax.strided_slice",
                "relax.take", "relax.squeeze", "relax.expand_dims", "relax.flatten"}


@dataclass
class ShuffleLog:
    rewritten: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _is_movement(value) -> bool:
    from tvm import relax
    if isinstance(value, relax.TupleGetItem):
        return True
    return isinstance(value, relax.Call) and getattr(value.op, "name", None) in MOVEMENT_OPS


def _data_input(value):
    from tvm import relax
    return value.tuple_value if isinstance(value, relax.TupleGetItem) else value.args[0]


def _rank(expr) -> int | None:
    shape = static_shape(expr)
    return None if shape is None else len(shape)


def offence(value, target: Target) -> str | None:
    """Why the target cannot run this movement binding, if it cannot."""
    if not _is_movement(value):
        return None
    if getattr(getattr(value, "op", None), "name", None) == "relax.permute_dims" \
            and not target.allows_op("Transpose"):
        return "permute_dims: Transpose is not in the target's ops"
    rank = _rank(value)
    if target.max_tensor_rank is not None and rank is not None and rank > target.max_tensor_rank:
        return f"a {rank}-D tensor; the target handles at most {target.max_tensor_rank}-D"
    return None


@dataclass
class Region:
    x: object                       # the Relax var the movement starts from
    bindings: list                  # (var, value) in program order
    outputs: list                   # vars leaving the region
    reason: str


def find_regions(bindings: Bindings, target: Target) -> list[Region]:
    """Each movement region holding an offending binding."""
    order, var2val, users = bindings.order, bindings.var2val, bindings.users
    regions, taken = [], set()
    for var in order:
        reason = offence(var2val[var], target)
        if reason is None or var in taken:
            continue
        start = var
        while _is_movement(var2val.get(_data_input(var2val[start]), None)):
            start = _data_input(var2val[start])
        x = _data_input(var2val[start])
        members, stack = set(), [start]
        while stack:
            current = stack.pop()
            if current in members:
                continue
            members.add(current)
            stack += [u for u in users.get(current, []) if _is_movement(var2val[u])
                      and _data_input(var2val[u]).same_as(current)]
        outputs = [v for v in order if v in members and (
            v in bindings.returned or any(u not in members for u in users.get(v, [])))]
        taken |= members
        regions.append(Region(x, [(v, var2val[v]) for v in order if v in members], outputs,
                              reason))
    return regions


def probe_selection(region: Region) -> list[np.ndarray] | Decline:
    """Per output, the channels of x it consists of; or why it is not a channel selection."""
    require_tvm()
    from tvm import relax
    shape = static_shape(region.x)
    if shape is None or len(shape) < 3:
        return Decline("the region's input has no static channels-first shape")
    probe = relax.Var("probe", relax.TensorType(list(shape), "float32"))
    inside = {region.x, *(var for var, _ in region.bindings)}
    if any(v not in inside for _, value in region.bindings for v in free_vars(value)):
        return Decline("the region reads a tensor computed outside it")
    remap = {region.x: probe}
    builder = relax.BlockBuilder()
    with builder.function("main", [probe]):
        with builder.dataflow():
            emit_renamed(builder, region.bindings, remap)
            result = builder.emit_output(relax.Tuple([remap[v] for v in region.outputs]))
        builder.emit_func_output(result)
    try:
        executable = build(builder.get(), "llvm", schedules=False)
    except Exception as exc:  # noqa: BLE001 - TVM refuses: not a region we understand
        return Decline(f"the region does not build alone ({type(exc).__name__})")
    ramp, noise = probe_inputs(shape)
    by_ramp = run_executable(executable, "llvm", [ramp])
    by_noise = run_executable(executable, "llvm", [noise])
    return decode_selections(shape, noise, by_ramp, by_noise)


def absorbers(var, users: dict, var2val: dict) -> list | None:
    """The conv calls reading ``var``, when every reader is a dense conv with a constant float
    weight that reads it as its data input."""
    calls = []
    for user in users.get(var, []):
        value = var2val.get(user)
        if value is None or conv_rank(value) is None or not value.args[0].same_as(var):
            return None
        spec = conv_spec(value)
        if isinstance(spec, Decline) or spec.groups != 1 or constant_weight(value) is None \
                or not spec.dtype.startswith("float"):
            return None
        calls.append(value)
    return calls or None


def ShuffleRemoval(target, log: ShuffleLog | None = None):  # noqa: N802 - a tvm.transform pass
    """Module pass: every channel shuffle ``target`` cannot run becomes the cheapest of folded
    weights, a take, or a one-hot 1x1 conv; regions that are not selections are kept (logged)."""
    tvm = require_tvm()
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator
    target = load_target(target)
    log = log if log is not None else ShuffleLog()

    @mutator
    class _Unshuffle(PyExprMutator):
        selects: list = []          # (region output value, x, src, form)
        folds: list = []            # (conv call, x, src)

        def _replace(self, expr):
            for value, x, src, form in self.selects:
                if expr.same_as(value):
                    return _select(self.visit_expr(x), src, form)
            return None

        def visit_call_(self, call):
            for conv, x, src in self.folds:
                if call.same_as(conv):
                    return _fold(call, self.visit_expr(x), src)
            replaced = self._replace(call)
            return super().visit_call_(call) if replaced is None else replaced

        def visit_tuple_getitem_(self, item):
            replaced = self._replace(item)
            return super().visit_tuple_getitem_(item) if replaced is None else replaced

    def prepare(mut, func):
        mut.selects, mut.folds = [], []
        bindings = Bindings.of(func)
        var2val = bindings.var2val
        for region in find_regions(bindings, target):
            selections = probe_selection(region)
            if isinstance(selections, Decline):
                log.kept.append(f"shuffle at {_name(region.x)}: {selections}")
                continue
            shape = static_shape(region.x)
            choices = []
            for out, src in zip(region.outputs, selections):
                convs = absorbers(out, bindings.users, var2val)
                growth = None if convs is None else \
                    fold_growth([conv_spec(c) for c in convs], len(src), shape[1])
                plan = plan_selection(len(src), shape[1], shape[2:], growth, target)
                choices.append(f"{len(src)} of {shape[1]} channels: {plan.strategy}")
                if plan.form == "fold":
                    mut.folds += [(conv, region.x, src) for conv in convs]
                else:
                    mut.selects.append((var2val[out], region.x, src, plan.form))
            log.rewritten.append(f"shuffle at {_name(region.x)} ({region.reason}): "
                                 + "; ".join(choices))

    inner = mutator_pass("convrewrite.ShuffleRemoval", _Unshuffle, prepare)

    @tvm.transform.module_pass(opt_level=0, name="convrewrite.ShuffleRemoval")
    def _pass(mod, _ctx):
        return inner(relax.transform.FoldConstant()(mod))

    return _pass


def _select(x, src: np.ndarray, form: str):
    from tvm import relax
    if form == "gather":
        return relax.op.take(x, relax.const(np.asarray(src, dtype=np.int64)), axis=1)
    dtype = str(x.ty.dtype)
    rank = len(static_shape(x)) - 2
    weight = relax.const(selection_weight(src, static_shape(x)[1], rank, dtype))
    op = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[rank]
    return op(x, weight)


def _fold(conv, x, src: np.ndarray):
    from tvm import relax
    wide = absorb_selection(constant_weight(conv), static_shape(x)[1], src)
    return conv_like(conv, x, relax.const(wide), int(conv.attrs.groups))


def _name(var) -> str:
    name = getattr(var, "name_hint", None) or getattr(var, "name", None)
    return str(name) if name else "a tensor"
