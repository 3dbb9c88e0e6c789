"""The Relax pipeline's passes (``Lower``, ``Rewrite``, ``lowering_pass``), and the one rewrite
that still comes to Relax through ONNX: the shift pass (a pattern pass, not a conv lowering).

Every conv lowering is a registered lowering (``lowerings``) and runs natively on Relax
(``relax_lower``), with computed weights and symbolic shapes where its plan allows. A one-hot
depthwise conv takes its cheapest shift form through the bridge: written out as a one-conv ONNX
model (its input shape, its constant weight, its attributes), rewritten by the ONNX shift pass,
and brought back by TVM's ONNX frontend; its bindings replace the conv in place. Each such
rewrite is a Record, verified as the ONNX pipeline verifies one (its original node against its
replacement on onnxruntime) and, the piece as TVM imported it, built and run on TVM against
onnxruntime's run of the original conv (``verify_bridged``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..conv import ConvSpec
from ..decline import Decline
from ..gs_graph import to_graph
from ..legality import check
from ..build.onnx_read import spec_of
from ..ops.reference import has_own_ops
from ..passes import ShiftLowering
from ..pipeline import rewrite_model
from ..record import Record
from ..target import Target, load_target
from ..verify import Tolerance, compare, run, verify_records
from . import require_tvm
from .build import build
from .relax_conv import (DEFAULT_LAYOUTS, constant_weight, conv_rank, conv_spec, emit_renamed,
                         mutator_pass, static_shape)
from .relax_lower import Lower as NativeLower
from .relax_lower import RelaxLog, registered_lowering
from .relax_shuffle import ShuffleLog, ShuffleRemoval
from .run import run_executable

TRANSPOSED_LAYOUTS = {1: ("NCW", "IOW"), 2: ("NCHW", "IOHW"), 3: ("NCDHW", "IODHW")}
RELAX_CONVS = {f"relax.nn.conv{r}d": ("Conv", r) for r in (1, 2, 3)}
RELAX_CONVS.update({f"relax.nn.conv{r}d_transpose": ("ConvTranspose", r) for r in (1, 2, 3)})
ONNX_OPSET = 17
NOT_REWRITTEN = "no pass rewrote it"


@dataclass
class LoweringLog:
    """What the Relax lowerings did: one line per conv rewritten, and per conv kept (with the
    reasons); the verified Records of every rewrite, native or bridged, are in ``relax``
    (``relax_lower.RelaxLog``: ``log.relax.report()`` is the report)."""

    rewritten: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    relax: RelaxLog = field(default_factory=RelaxLog)


def conv_as_onnx(call) -> onnx.ModelProto | Decline:
    """A Relax conv or transposed conv with a constant weight as a one-node ONNX model
    (input ``x``, output ``y``), or the reason it cannot be one."""
    op_type, rank = RELAX_CONVS.get(getattr(call.op, "name", None), (None, None))
    if op_type is None:
        return Decline("not a conv")
    attrs = call.attrs
    layouts = TRANSPOSED_LAYOUTS if op_type == "ConvTranspose" else DEFAULT_LAYOUTS
    if (attrs.data_layout, attrs.kernel_layout) != layouts[rank] \
            or attrs.out_layout != attrs.data_layout:
        return Decline(f"layouts {attrs.data_layout}/{attrs.kernel_layout} are not channels-first")
    x_shape, out_shape = static_shape(call.args[0]), static_shape(call)
    if x_shape is None or out_shape is None:
        return Decline("shapes are not static")
    weight = constant_weight(call)
    if weight is None:
        return Decline("the weight is not a constant")
    dtype = str(call.args[0].ty.dtype)
    if str(call.ty.dtype) != dtype:
        return Decline(f"out_dtype {call.ty.dtype} differs from the input's {dtype}")
    onnx_attrs = {"kernel_shape": list(weight.shape[2:]), "group": int(attrs.groups),
                  "strides": [int(s) for s in attrs.strides],
                  "dilations": [int(d) for d in attrs.dilation],
                  "pads": [int(p) for p in attrs.padding]}
    if op_type == "ConvTranspose":
        onnx_attrs["output_padding"] = [int(p) for p in attrs.output_padding]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [helper.make_node(op_type, ["x", "W"], ["y"], name="conv", **onnx_attrs)], "relax_conv",
        [helper.make_tensor_value_info("x", elem, list(x_shape))],
        [helper.make_tensor_value_info("y", elem, list(out_shape))],
        [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8
    return model


@dataclass
class Bridged:
    """A conv rewritten through ONNX: the Relax module TVM's frontend made of the rewritten
    one-conv model (``main`` of one parameter), the ONNX rewrite and its Records."""

    piece: object
    rewritten: onnx.ModelProto
    records: list[Record]

    @property
    def rewrite(self) -> str:
        return "; ".join(f"{r.pass_name}: {r.rewrite}" for r in self.records)


def lower_model(model: onnx.ModelProto, call, target: Target,
                graph_passes) -> Bridged | Decline:
    """``model`` (``call`` as ``conv_as_onnx`` wrote it) rewritten by the ONNX ``graph_passes``
    (no conv lowering: those run natively) and imported back as a Relax module; or the reason
    the conv stays as it is."""
    rewritten, result = rewrite_model(model, target, (), graph_passes=graph_passes)
    if not result.records:
        return Decline(NOT_REWRITTEN)
    if has_own_ops(rewritten):
        return Decline("the rewrite keeps ops of our domain, which TVM's ONNX frontend cannot import")
    from tvm.relax.frontend.onnx import from_onnx
    dtype = str(call.args[0].ty.dtype)
    mod = from_onnx(rewritten, shape_dict={"x": list(static_shape(call.args[0]))},
                    dtype_dict={"x": dtype}, keep_params_in_input=False)
    return Bridged(mod, rewritten, result.records)


def verify_bridged(bridged: Bridged, original: onnx.ModelProto, tolerance: Tolerance) -> None:
    """Each Record's ``verify``, as the ONNX pipeline checks a rewrite: its original node against
    its replacement on onnxruntime, on one seeded input; and the piece TVM's frontend imported,
    built and run on TVM, against onnxruntime's run of the original conv (a wrong import or a
    wrong Relax op fails every record of the piece)."""
    x = original.graph.input[0]
    shape = [d.dim_value for d in x.type.tensor_type.shape.dim]
    dtype = helper.tensor_dtype_to_np_dtype(x.type.tensor_type.elem_type)
    feeds = {"x": np.random.default_rng(0).uniform(-1, 1, shape).astype(dtype)}
    verify_records(bridged.records, bridged.rewritten, feeds, tolerance)
    reference = run(original, feeds)["y"]
    actual = run_executable(build(bridged.piece, "llvm", schedules=False), "llvm",
                            [feeds["x"]])[0]
    kind = "reassociating" if any(r.tolerance == "reassociating" for r in bridged.records) \
        else "exact"
    on_tvm = compare(reference, actual, *tolerance.resolve(reference.dtype, kind),
                     scale_atol=kind == "reassociating")
    for record in bridged.records:
        record.notes.append("checked on onnxruntime, and the piece imported into Relax on TVM "
                            "against onnxruntime's run of the original")
        if record.verify is None or not on_tvm["passed"]:
            record.verify = on_tvm


def inline(builder, mod, args: list):
    """Emit the bindings of ``mod["main"]`` into ``builder`` with its parameters bound to
    ``args`` (the PrimFuncs it calls are added alongside); returns its result expression."""
    func = mod["main"]
    global_vars = {gv.name_hint: builder.add_func(f, gv.name_hint)
                   for gv, f in mod.functions_items() if gv.name_hint != "main"}
    bindings = [(b.var, b.value) for block in func.body.blocks for b in block.bindings]
    rename = emit_renamed(builder, bindings, dict(zip(func.params, args)), global_vars)
    return rename(func.body.body)


def bridge_pass(name: str, target, graph_passes, log: LoweringLog | None = None,
                verify: bool = True, tolerance: Tolerance | None = None):
    """A module pass giving every depthwise conv to the ONNX ``graph_passes`` (the shift pass:
    a one-hot depthwise conv as shifts), each rewrite a Record in ``log.relax``, with ``verify``
    checked (``verify_bridged``). A conv they leave is the native lowerings' to judge."""
    require_tvm()
    from tvm.relax.expr_functor import PyExprMutator, mutator
    target = load_target(target)
    log = log if log is not None else LoweringLog()
    tolerance = tolerance or Tolerance()

    @mutator
    class _Lower(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) not in RELAX_CONVS:
                return call
            model = conv_as_onnx(call)
            if isinstance(model, Decline) or not _depthwise(model):
                return call
            lowered = lower_model(model, call, target, graph_passes)
            if isinstance(lowered, Decline):
                if lowered.reason != NOT_REWRITTEN:
                    log.kept.append(f"{_describe(call)}: {lowered}")
                return call
            if verify:
                verify_bridged(lowered, model, tolerance)
            for record in lowered.records:
                record.node = f"{_describe(call)} {record.node}"
            log.relax.records += lowered.records
            log.rewritten.append(f"{_describe(call)}: {lowered.rewrite}")
            return inline(self.builder_, lowered.piece, [call.args[0]])

    return mutator_pass(name, _Lower)


def _depthwise(model: onnx.ModelProto) -> bool:
    spec = spec_of(to_graph(model).nodes[0])
    return not isinstance(spec, Decline) and spec.group_form == "depthwise"


def relax_spec(call) -> ConvSpec | Decline:
    """The ConvSpec of any Relax conv or transposed conv (read as its one-node ONNX model when
    the weight is a constant), or why there is none."""
    model = conv_as_onnx(call)
    if isinstance(model, Decline):
        return conv_spec(call) if conv_rank(call) is not None else model
    return spec_of(to_graph(model).nodes[0])


def violations_in(mod, target, rules=None) -> list[str]:
    """The convs of ``mod`` that ``target`` still rejects (only for ``rules`` when given), each
    described with the rules it breaks: the Relax side of ``convrewrite.check``."""
    require_tvm()
    from tvm import relax
    target = load_target(target)
    bad = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", None) in RELAX_CONVS:
            spec = relax_spec(expr)
            if isinstance(spec, Decline):
                return
            broken = sorted({v.rule for v in check(spec, target)
                             if rules is None or v.rule in rules})
            if broken:
                bad.append(f"{spec.describe()}: {', '.join(broken)}")

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bad


def _describe(call) -> str:
    return f"{call.op.name} {static_shape(call.args[0])}->{static_shape(call)}"


def Lower(target, log: LoweringLog | None = None):  # noqa: N802 - a tvm.transform pass
    """Module pass: every conv ``target`` rejects becomes what ``convrewrite`` makes of it (the
    registered lowerings, natively: ``relax_lower``), after one-hot depthwise convs take their
    cheapest shift form on ``target`` (first, as the ONNX pipeline's pattern passes do)."""
    tvm = require_tvm()
    log = log if log is not None else LoweringLog()
    shifts = bridge_pass("convrewrite.Lower.shifts", target, (ShiftLowering(),), log)
    return tvm.transform.Sequential([shifts, _native(target, log)], name="convrewrite.Lower")


def _native(target, log: LoweringLog, lowerings=None):
    """The native Relax lowerings, their records and what they left written as log lines."""
    tvm = require_tvm()
    inner = NativeLower(target, lowerings, log.relax)

    @tvm.transform.module_pass(opt_level=0, name="convrewrite.Lower.native")
    def _pass(mod, _ctx):
        before, left = len(log.relax.records), len(log.relax.remaining)
        mod = inner(mod)
        log.rewritten += [f"{r.node}: {r.pass_name}: {r.rewrite}"
                          for r in log.relax.records[before:]]
        log.kept += [f"{r.describe}: {'; '.join(r.reasons) or 'no lowering rewrote it'}"
                     for r in log.relax.remaining[left:]]
        return mod

    return _pass


def lowering_pass(pass_name: str, target, log: LoweringLog | None = None):
    """Module pass running one registered lowering alone, by its name in the report
    (``dilation``, ``stride``, ...), natively on Relax, its lines in ``log``."""
    log = log if log is not None else LoweringLog()
    return _native(target, log, (registered_lowering(pass_name),))


def Rewrite(target, log: LoweringLog | None = None):  # noqa: N802 - a tvm.transform pass
    """Module pass: what ``convrewrite MODEL --target T`` does, on Relax — channel shuffles
    removed (``relax_shuffle.ShuffleRemoval``), then every conv lowered (``Lower``)."""
    tvm = require_tvm()
    log = log if log is not None else LoweringLog()
    shuffles = ShuffleLog(log.rewritten, log.kept)
    return tvm.transform.Sequential([ShuffleRemoval(target, shuffles), Lower(target, log)],
                                    name="convrewrite.Rewrite")
