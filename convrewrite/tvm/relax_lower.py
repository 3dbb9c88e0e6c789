"""The registered lowerings (``lowerings``), natively on Relax: the same planners, the same
emitters, built with the Relax Builder (``build.relax``), on modules from any frontend.

``Lower(target)`` is a module pass: every conv or transposed conv call the target rejects goes to
the first lowering (in ``rules.LOWERING_ORDER``) that fixes a rule it breaks and does not
decline; the pass repeats over what that made until nothing changes. Each rewrite leaves a
``Record`` in the ``RelaxLog`` (the report's own type, so ``log.report()`` is the same report the
ONNX path gives) and is verified on its own: the original call and its replacement are built as
two small Relax functions and run on TVM (LLVM, TVM's default schedules) on the same seeded
input, and, when the weight is a constant, the original is also run on onnxruntime (as a
one-conv ONNX model) against TVM's replacement. A mismatch is a failed record, never a warning.
Symbolic extents are fine where the plan allows them; the check runs them at batch 1 and
``verify.DEFAULT_DYNAMIC_DIM`` elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..build.builder import ConvSite
from ..build.relax import RelaxBuilder, RelaxWeight
from ..build.relax_read import RELAX_CONVS, conv_attrs, conv_spec_of, constant_value, dims, op_name
from ..decline import Decline, Declined
from ..legality import check
from ..lowerings import LOWERINGS, Lowering, default_lowerings
from ..passes.protocol import NodeDecline
from ..record import Record, Remaining
from ..report import Report
from ..rules import FIXED_BY
from ..target import Target, load_target
from ..verify import DEFAULT_BATCH, DEFAULT_DYNAMIC_DIM, Tolerance, compare, run
from . import require_tvm
from .build import build
from .relax_conv import mutator_pass

MAX_ROUNDS = 16
ONNX_OPSET = 17


@dataclass
class RelaxLog:
    """What the Relax lowerings did: a Record per rewrite (verified), a reason per decline."""

    records: list[Record] = field(default_factory=list)
    declines: list[NodeDecline] = field(default_factory=list)
    remaining: list[Remaining] = field(default_factory=list)

    def report(self, model: str = "<relax module>", target: str = "") -> Report:
        return Report(model=model, target=target, records=self.records, remaining=self.remaining,
                      convs_checked=len(self.records) + len(self.remaining))


def relax_site(call, spec) -> ConvSite:
    weight = call.args[1]
    return ConvSite(spec.name, spec, call.args[0], None,
                    RelaxWeight(constant_value(weight), weight), None, conv_attrs(call),
                    weight_operand=weight)


def Lower(target, lowerings: tuple[Lowering, ...] | None = None,  # noqa: N802 - a TVM pass
          log: RelaxLog | None = None, verify: bool = True,
          tolerance: Tolerance | None = None):
    """Module pass: every conv ``target`` rejects becomes what the registered lowerings make of
    it (``lowerings``: a subset, in their order), each rewrite recorded in ``log`` and, with
    ``verify``, checked on TVM and onnxruntime."""
    tvm = require_tvm()
    from tvm.relax.expr_functor import PyExprMutator, mutator
    target = load_target(target)
    lowerings = tuple(lowerings) if lowerings is not None else default_lowerings()
    log = log if log is not None else RelaxLog()
    tolerance = tolerance or Tolerance()

    seen = {"convs": 0}           # numbers the convs met, over all rounds: readable record names

    @mutator
    class _Lower(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if op_name(call) not in RELAX_CONVS:
                return call
            seen["convs"] += 1
            name = f"{op_name(call).split('.')[-1]}#{seen['convs']}"
            spec = conv_spec_of(call, name)
            if isinstance(spec, Decline):
                return call
            violations = check(spec, target)
            rules = {v.rule for v in violations}
            for lowering in lowerings:
                if not rules & lowering.fixes:
                    continue
                replacement = _lower(self.builder_, call, spec, violations, lowering, target,
                                     log, verify, tolerance)
                if replacement is not None:
                    return replacement
            return call

    one_round = mutator_pass("convrewrite.Lower.round", _Lower)

    @tvm.transform.module_pass(opt_level=0, name="convrewrite.Lower")
    def _pass(mod, _ctx):
        for _ in range(MAX_ROUNDS):
            before = len(log.records)
            mod = one_round(mod)
            if len(log.records) == before:
                break
        log.remaining = remaining_in(mod, target, lowerings, log)
        return mod

    return _pass


def registered_lowering(name: str) -> Lowering:
    """The registered lowering named ``name`` (``channel_split``, ...), or a ValueError naming
    the known ones."""
    if name not in LOWERINGS:
        raise ValueError(f"no registered lowering named {name!r}; known: "
                         f"{', '.join(sorted(LOWERINGS))}")
    return LOWERINGS[name]()


def lowering_pass(name: str, target, log: RelaxLog | None = None, verify: bool = True):
    """Module pass running one registered lowering, by its name (``channel_split``, ...)."""
    return Lower(target, (registered_lowering(name),), log, verify)


def _lower(bb, call, spec, violations, lowering: Lowering, target: Target, log: RelaxLog,
           verify: bool, tolerance: Tolerance):
    """The replacement of ``call`` by ``lowering`` (None when it declines, with the reason
    logged)."""
    planned = lowering.plan(spec, target)
    node = spec.name
    if isinstance(planned, Decline):
        log.declines.append(NodeDecline(node, spec.op_type, planned.within(lowering.name)))
        return None
    builder = RelaxBuilder(bb, call)
    try:
        out = lowering.emit(builder, relax_site(call, spec), planned)
    except Declined as declined:
        log.declines.append(NodeDecline(node, spec.op_type,
                                        declined.decline.within(lowering.name)))
        return None
    macs = None if spec.macs is None else int(spec.macs * planned.macs_factor)
    record = Record(node=node, op=spec.op_type, pass_name=lowering.name,
                    rules=[v for v in violations if v.rule in lowering.fixes],
                    rewrite=planned.rewrite, input_name=_name(call.args[0]), output_name=node,
                    tolerance=planned.tolerance, macs_before=spec.macs, macs_after=macs,
                    params_before=spec.params,
                    params_after=spec.params if planned.params_after is None
                    else planned.params_after, nodes_after=builder.bindings)
    if verify:
        verify_rewrite(record, call, spec, lowering, planned, tolerance)
    log.records.append(record)
    return out


def _name(expr) -> str:
    return str(getattr(expr, "name_hint", "") or type(expr).__name__)


def concrete_shape(shape) -> list[int]:
    """A shape to check a piece on: symbolic extents at batch 1 and DEFAULT_DYNAMIC_DIM."""
    return [d if d is not None else (DEFAULT_BATCH if i == 0 else DEFAULT_DYNAMIC_DIM)
            for i, d in enumerate(shape)]


def verify_rewrite(record: Record, call, spec, lowering: Lowering, planned,
                   tolerance: Tolerance) -> None:
    """``record.verify``: the original call vs its replacement on TVM, on one seeded input (and
    against onnxruntime's run of the original where the weight is a constant)."""
    tvm = require_tvm()
    from tvm import relax
    shape = concrete_shape(spec.input_shape)
    dtype = spec.dtype
    weight = call.args[1]
    value = constant_value(weight)
    rng = np.random.default_rng(0)
    x_value = rng.uniform(-1, 1, shape).astype(dtype)
    w_value = value if value is not None else \
        rng.uniform(-1, 1, [int(d) for d in dims(weight)]).astype(dtype)
    def params():
        return (relax.Var("x", relax.TensorType(shape, dtype)),
                relax.Var("w", relax.TensorType([int(d) for d in dims(weight)], dtype)))

    bb = relax.BlockBuilder()
    x, w = params()
    with bb.function("before", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.Call(call.op, [x, w], call.attrs))
        bb.emit_func_output(out)
    x, w = params()
    with bb.function("after", [x, w]):
        with bb.dataflow():
            piece_call = relax.Call(call.op, [x, w], call.attrs)
            piece_spec = conv_spec_of(bb.normalize(piece_call), spec.name)
            site = ConvSite(spec.name, piece_spec, x, None, RelaxWeight(value, w), None,
                            conv_attrs(call), weight_operand=w)
            out = bb.emit_output(lowering.emit(RelaxBuilder(bb, piece_call), site, planned))
        bb.emit_func_output(out)
    executable = build(bb.get(), "llvm", schedules=False)
    vm = relax.VirtualMachine(executable, tvm.cpu(0))
    args = [tvm.runtime.tensor(a) for a in (x_value, w_value)]
    reference = vm["before"](*args).numpy()
    actual = vm["after"](*args).numpy()
    kind = record.tolerance
    checks = [compare(reference, actual, *tolerance.resolve(reference.dtype, kind),
                      scale_atol=kind == "reassociating")]
    if value is not None:
        onnx_out = run(conv_as_onnx(call, spec, value, shape), {"x": x_value})["y"]
        checks.append(compare(onnx_out, actual, *tolerance.resolve(onnx_out.dtype, kind),
                              scale_atol=kind == "reassociating"))
        record.notes.append("checked on TVM and against onnxruntime's run of the original")
    else:
        record.notes.append("checked on TVM (the weight is computed: random values)")
    record.verify = max(checks, key=lambda s: (not s["passed"], s.get("max_abs", 0.0)))


def conv_as_onnx(call, spec, weight: np.ndarray, shape: list[int]) -> onnx.ModelProto:
    """The call as a one-node ONNX model (input ``x`` of ``shape``, output ``y``)."""
    attrs = conv_attrs(call)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    graph = helper.make_graph(
        [helper.make_node(spec.op_type, ["x", "W"], ["y"], name="conv", **attrs)], "relax_conv",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, None)],
        [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8
    return model


def _unowned(rule: str) -> str:
    """Why a conv breaking ``rule`` was left: no lowering fixes it, or none of those run."""
    fixers = [name for name in FIXED_BY.get(rule, []) if name in LOWERINGS]
    return f"rule {rule}: fixed by {', '.join(fixers)}, not among the lowerings run" if fixers \
        else f"no lowering fixes rule {rule}"


def remaining_in(mod, target: Target, lowerings, log: RelaxLog) -> list[Remaining]:
    """The convs of ``mod`` that ``target`` still rejects, each with the reasons logged."""
    require_tvm()
    from tvm import relax
    owners = {r for lowering in lowerings for r in lowering.fixes}
    found = []
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        calls = []
        relax.analysis.post_order_visit(func, lambda e: calls.append(e)
                                        if isinstance(e, relax.Call) and op_name(e) in RELAX_CONVS
                                        else None)
        for call in calls:
            spec = conv_spec_of(call, f"{gv.name_hint}/{op_name(call).split('.')[-1]}")
            if isinstance(spec, Decline):
                continue
            violations = check(spec, target)
            if violations:
                reasons = [_unowned(v.rule) for v in violations if v.rule not in owners]
                found.append(Remaining(spec.name, spec.op_type, spec.describe(), violations,
                                       reasons or [d.decline.reason for d in log.declines]))
    return found
