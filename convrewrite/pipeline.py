"""The pass manager: the whole pipeline, its order as data (``PIPELINE``).

    inline functions -> If/Loop/Scan bodies -> patterns -> lowerings (conv fixpoint)
    -> verify each rewrite -> tidy -> verify end to end

Every rewriting step runs passes of the one protocol (``passes.protocol.GraphPass`` ->
``PassResult``) over the graph; verification steps compare on onnxruntime. After the lowerings,
what the target still rejects is named with every pass's reason (``Remaining``); nothing is kept
silently. Saving is the caller's (the command line writes atomically, the API returns the model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .build.onnx_read import conv_nodes, spec_of
from .conv import CONV_OPS
from .decline import Decline, Declined
from .graph import opset_version
from .gs_graph import from_graph, reimported, reinferred, to_graph
from .legacy import for_rewriting, restore
from .legality import check
from . import memory
from .naming import Names
from .ops import DOMAIN
from .ops.reference import drop_own_opset
from .passes import (DEFAULT_PASSES, GRAPH_PASSES, LOWERED_PASSES, TIDY_PASSES, LowerConvs, Pass,
                     RewriteContext)
from .passes.bodies import Body, holds_body_convs, rewrite_bodies
from .passes.inline_functions import inline_rejected_functions, legal_at_call_sites
from .passes.piecewise import ELEMENTWISE_OPS
from .passes.protocol import GraphPass, NodeDecline, PassResult
from .passes.shuffle import offence as movement_offence
from .patterns import depthwise_separable_pairs
from .record import Record, Remaining
from .target import Target
from .tensor_limits import interface_reason, limits_tensors, tensor_offences
from .validate import validate_graph, validate_model
from .walk import nested_scopes
from .verify import (Tolerance, make_inputs, optimization_level, reference_run, verify_end_to_end,
                     verify_records, verify_with_reference)

MAX_ITERATIONS = 16


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: ``inline`` (model-local functions holding a conv the target
    rejects, inlined into the main graph the rewrites see: passes.inline_functions), ``bodies``
    (the rewrite steps over each If/Loop/Scan body of the main graph: passes.bodies), ``rewrite``
    (its passes over the graph; ``repeat``: each pass again while it rewrites, since shapes
    behind a rewrite may become known), ``tidy`` (its passes over the rewritten model, after
    local verification), or ``verify`` (``local``: each record's original vs its replacement;
    ``end_to_end``: the whole model)."""

    name: str
    kind: str                               # inline | bodies | rewrite | tidy | verify
    passes: tuple[GraphPass, ...] = ()
    repeat: bool = False
    scope: str = ""                         # verify: local | end_to_end
    timing: str = ""                        # the report's timings key


PIPELINE: tuple[Step, ...] = (
    Step("inline_functions", "inline", timing="rewrite"),
    Step("bodies", "bodies", timing="rewrite"),
    Step("patterns", "rewrite", GRAPH_PASSES, repeat=True, timing="rewrite"),
    # then the pointwise ops around the lowered convs, where every op's tensors are limited
    Step("lowerings", "rewrite", (LowerConvs(DEFAULT_PASSES), *LOWERED_PASSES), timing="rewrite"),
    Step("verify_local", "verify", scope="local", timing="verify_local"),
    Step("tidy", "tidy", TIDY_PASSES, timing="tidy"),
    Step("verify_end_to_end", "verify", scope="end_to_end", timing="verify_end_to_end"),
)


@dataclass
class RewriteResult:
    records: list[Record] = field(default_factory=list)
    remaining: list[Remaining] = field(default_factory=list)
    convs_checked: int = 0
    regroupable_sums: set[str] = field(default_factory=set)
    recognised: list[str] = field(default_factory=list)    # patterns noted, left as they were
    declines: list[NodeDecline] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    end_to_end: dict | None = None
    inputs: dict[str, np.ndarray] | None = None             # the feeds verification used
    timings: dict[str, float] = field(default_factory=dict)
    inlined: tuple[str, ...] = ()                           # functions inlined (domain::name)
    bodies: list[Body] = field(default_factory=list)        # If/Loop/Scan bodies rewritten

    @property
    def changed(self) -> bool:
        """Whether the model was rewritten: a conv record, or a function inlined (which renames
        its nodes and must be verified end to end even when no conv record results)."""
        return bool(self.records or self.inlined)


def name_unnamed_nodes(graph: gs.Graph) -> None:
    """Records and derived names need a name per conv; exporters sometimes leave them empty."""
    names = Names(n.name for n in graph.nodes if n.name)
    for i, node in enumerate(graph.nodes):
        if not node.name and node.op in CONV_OPS:
            node.name = names.fresh(f"{node.op}_{i}")


def pipeline(passes: tuple[Pass, ...] = DEFAULT_PASSES,
             graph_passes: tuple[GraphPass, ...] = GRAPH_PASSES) -> tuple[Step, ...]:
    """``PIPELINE`` with other conv or pattern passes (tests and benchmarks force forms)."""
    steps = []
    for step in PIPELINE:
        if step.name == "patterns":
            step = Step(step.name, step.kind, tuple(graph_passes), step.repeat, timing=step.timing)
        elif step.name == "lowerings":
            step = Step(step.name, step.kind, (LowerConvs(passes), *LOWERED_PASSES),
                        timing=step.timing)
        steps.append(step)
    return tuple(steps)


def _run_pass(gp: GraphPass, ctx: RewriteContext, like: onnx.ModelProto, repeat: bool,
              result: RewriteResult) -> None:
    noted: list[str] = []              # every round's notes, each once (a pass that rewrote
    for _ in range(MAX_ITERATIONS if repeat else 1):    # in round 1 may say nothing in round 2)
        outcome: PassResult = gp.run(ctx, like)
        ctx.graph = outcome.graph
        result.records += outcome.records
        result.notes += outcome.notes
        noted += [r for r in outcome.recognised if r not in noted]
        if outcome.records and repeat:
            ctx.graph = reimported(ctx.graph, like)
        if not (repeat and outcome.records):
            break
    result.recognised += noted
    result.declines += outcome.declines


def run_rewrites(graph: gs.Graph, target: Target, like: onnx.ModelProto,
                 steps: tuple[Step, ...], sparse_inputs: tuple[str, ...] = (),
                 dry_run: bool = False, names: Names | None = None,
                 sparse_samples: dict | None = None) -> tuple[gs.Graph, RewriteResult]:
    """The rewriting steps of ``steps`` over ``graph`` (``like``: the model it came from, for
    opsets and ir_version), then what the target still rejects (``names``: the model-wide set,
    when ``graph`` is one If/Loop/Scan body made standalone). A malformed conv (or model) is a
    BadInputError naming it, before any pass looks at it."""
    validate_model(like)
    validate_graph(graph)
    graph.cleanup(remove_unused_graph_inputs=False)     # a dead conv (reaching no output) does
    name_unnamed_nodes(graph)                           # not run: nothing to rewrite or verify
    ctx = RewriteContext(graph=graph, target=target, opset=opset_version(like),
                         names=names if names is not None else Names.in_graph(graph),
                         sparse_inputs=tuple(sparse_inputs),
                         sparse_samples=dict(sparse_samples or {}))
    result = RewriteResult()
    result.recognised += depthwise_separable_pairs(graph)
    for step in steps:
        if step.kind != "rewrite" or dry_run:
            continue
        started = time.perf_counter()
        for gp in step.passes:
            _run_pass(gp, ctx, like, step.repeat, result)
        result.timings[step.timing] = result.timings.get(step.timing, 0.0) + \
            time.perf_counter() - started
    result.regroupable_sums = ctx.regroupable_sums
    conv_passes = [p for step in steps for gp in step.passes if isinstance(gp, LowerConvs)
                   for p in gp.passes]
    _final_legality(ctx.graph, target, result, dry_run, conv_passes, like)
    return ctx.graph, result


def _final_legality(graph: gs.Graph, target: Target, result: RewriteResult, dry_run: bool,
                    conv_passes: list[Pass], like: onnx.ModelProto) -> None:
    """Every conv (and op of our domain) still in ``graph`` that the target rejects, with every
    pass's reason, and each rule no lowering fixes named as such."""
    conv_reasons: dict[str, list[str]] = {}
    pattern_reasons: dict[str, tuple[str, list[str]]] = {}   # every pattern pass's, once
    for d in result.declines:
        if d.op in CONV_OPS:
            conv_reasons.setdefault(d.node, []).append(d.decline.reason)
        elif d.decline.reason not in pattern_reasons.setdefault(d.node, (d.op, []))[1]:
            pattern_reasons[d.node][1].append(d.decline.reason)
    live = {n.name: n for n in graph.nodes if n.outputs}
    for name, (op, reasons) in pattern_reasons.items():
        if name in live:                # the rule it breaks, not only why no pass fixed it
            broken = movement_offence(live[name], target, graph)
            result.remaining.append(Remaining(name, op, op, [broken] if broken else [],
                                              reasons))
    for node in live.values():
        if node.domain == DOMAIN and node.name not in pattern_reasons:
            reason = "a pattern pass lowers it (not run by --check-only)" if dry_run else \
                "no lowering for this op"
            result.remaining.append(Remaining(node.name, node.op, f"{DOMAIN}.{node.op}", [],
                                              [reason]))
    for node in conv_nodes(graph):
        result.convs_checked += 1
        spec = spec_of(node)
        if isinstance(spec, Decline):
            result.remaining.append(Remaining(node.name, node.op, node.op, [], [spec.reason]))
            continue
        violations = check(spec, target)
        if not violations:
            continue
        reasons = list(conv_reasons.get(node.name, []))
        for v in violations:
            owners = [p for p in conv_passes if v.rule in p.fixes]
            if not owners:
                reasons.append(f"no lowering for rule {v.rule} on this target yet")
            elif dry_run:
                reasons.append(f"{v.rule}: {_first_taker(owners, spec, target)} would rewrite it")
        result.remaining.append(Remaining(node.name, node.op, spec.describe(), violations,
                                          reasons))
    _nested_legality(graph, target, result, like)
    if dry_run:
        movement_legality(graph, target, result,
                          "the shuffle pass rewrites data movement (not run by --check-only)")
        tensor_legality(graph, target, result, dry_run=True)


def _first_taker(owners: list[Pass], spec, target: Target) -> str:
    """The first pass (in lowering order) owning a rule whose plan takes this conv: a float conv
    goes to channel_split, a QLinearConv to integer_split, though both own the channel rules."""
    for p in owners:
        lowering = getattr(p, "lowering", None)
        try:
            if not isinstance(lowering.plan(spec, target), Decline) if lowering is not None \
                    else p.takes(spec, target):
                return p.name
        except Declined:
            continue
    return owners[0].name


def movement_legality(graph: gs.Graph, target: Target, result: RewriteResult,
                      reason: str | None = None) -> None:
    """Every data-movement node the target cannot run (a tensor of a rank it lacks, a Transpose
    it does not take) that is not named yet: the lowerings make Reshapes and Transposes too, so
    the final model is checked, not only the convs."""
    named = {r.node for r in result.remaining}
    for node in graph.nodes:
        broken = movement_offence(node, target, graph) if node.name not in named else None
        if broken is None:
            continue
        readers = sorted({r.op for out in node.outputs for r in out.outputs})
        why = reason or (f"it feeds {', '.join(readers) or 'nothing'}: no view rewrite moves it "
                         "past those to the model's interface")
        result.remaining.append(Remaining(node.name, node.op, node.op, [broken], [why]))


def tensor_legality(graph: gs.Graph, target: Target, result: RewriteResult,
                    dry_run: bool = False) -> None:
    """Every op (not a conv: its own rules judge it) with a tensor over the target's every-op
    limits (``max_tensor_dim``, ``max_tensor_batch``) that is not named yet, with why it stays:
    for an elementwise op, why the piecewise pass did not cut it; for any other, the model's own
    input or output it reads or writes, else every reason a pass gave, else that none cuts it."""
    if not limits_tensors(target):
        return
    named = {r.node for r in result.remaining}
    declined: dict[str, list[str]] = {}
    for d in result.declines:
        declined.setdefault(d.node, []).append(d.decline.reason)
    for node in graph.nodes:
        offences = tensor_offences(node, target) if node.name not in named else []
        if not offences:
            continue
        if node.op in ELEMENTWISE_OPS and (dry_run or node.name in declined):
            reasons = declined.get(node.name) or \
                ["the piecewise pass cuts it (not run by --check-only)"]
        else:                           # a cut or join of the model's own input or output
            reasons = [w for w in (interface_reason(o, graph) for o in offences) if w] or \
                declined.get(node.name) or [f"no lowering cuts a {node.op} yet"]
        result.remaining.append(Remaining(node.name, node.op, node.op,
                                          [o.violation for o in offences], reasons))


def _nested_legality(graph: gs.Graph, target: Target, result: RewriteResult,
                     like: onnx.ModelProto) -> None:
    """Convs in If/Loop/Scan bodies and model-local functions: the lowerings rewrite the main
    graph and the bodies it holds directly (passes.bodies; a function with a conv the target
    rejects is inlined first), so each one the target still rejects (or that cannot be checked:
    a weight of unknown shape inside a function) is named with its path, never passed over."""
    at_call_sites = None        # function convs judged where they land (shapes known there)
    for scope in nested_scopes(graph):
        for node in conv_nodes(scope.graph):
            result.convs_checked += 1
            where = scope.where(node)
            spec = spec_of(node)
            if isinstance(spec, Decline) and scope.path.startswith("function "):
                if at_call_sites is None:
                    at_call_sites = legal_at_call_sites(like, target)
                if (scope.path.removeprefix("function "), node.name) in at_call_sites:
                    continue
            if isinstance(spec, Decline):
                result.remaining.append(Remaining(where, node.op, node.op, [], [
                    f"inside {scope.path}, cannot be checked: {spec.reason}"]))
                continue
            violations = check(spec, target)
            if violations:
                result.remaining.append(Remaining(where, node.op, spec.describe(), violations, [
                    f"inside {scope.path}: not made legal there (a rewrite reaches the main "
                    "graph and the If/Loop/Scan bodies it holds directly; --check-only none)"]))



def run_passes(graph: gs.Graph, target: Target, like: onnx.ModelProto,
               passes: tuple[Pass, ...] = DEFAULT_PASSES, dry_run: bool = False,
               graph_passes: tuple[GraphPass, ...] = GRAPH_PASSES,
               sparse_inputs: tuple[str, ...] = ()) -> tuple[gs.Graph, RewriteResult]:
    """The pattern and conv steps over ``graph`` (``passes`` may hold registered lowerings)."""
    return run_rewrites(graph, target, like, pipeline(passes, graph_passes), sparse_inputs,
                        dry_run)


def rewrite_model(model: onnx.ModelProto, target: Target,
                  passes: tuple[Pass, ...] = DEFAULT_PASSES,
                  sparse_inputs: tuple[str, ...] = (),
                  graph_passes: tuple[GraphPass, ...] = GRAPH_PASSES,
                  sparse_samples: dict | None = None) -> tuple[onnx.ModelProto, RewriteResult]:
    """Rewrite a model, no verification or tidying; when nothing changes the original proto is
    returned untouched. ``sparse_inputs`` names tensors known to be mostly zero (or masks): the
    convs reading them become SparseConvs (passes.dense_to_sparse); ``sparse_samples``: a real
    value of some of them, which the sparse regions are planned by (``sparse.plan``)."""
    steps = pipeline(passes, graph_passes)
    work, inlined, seconds = _inline(model, target, steps)
    work, bodies = _bodies(work, target, steps, tuple(sparse_inputs))
    graph, result = run_rewrites(to_graph(work), target, work, steps, tuple(sparse_inputs),
                                 sparse_samples=sparse_samples)
    _note_inlined(result, inlined, seconds)
    _note_bodies(result, *bodies)
    if not result.changed:
        return model, result
    return drop_own_opset(from_graph(graph, work)), result


def _inline(model: onnx.ModelProto, target: Target, steps: tuple[Step, ...]):
    """The ``inline`` step, when ``steps`` has one: the model the rewrites see, what was
    inlined, and how long it took."""
    if not any(step.kind == "inline" for step in steps):
        return model, None, 0.0
    started = time.perf_counter()
    work, inlined = inline_rejected_functions(model, target)
    return work, inlined, time.perf_counter() - started


def _bodies(model: onnx.ModelProto, target: Target, steps: tuple[Step, ...],
            sparse_inputs: tuple[str, ...]):
    """The ``bodies`` step, when ``steps`` has one: the model with its main graph's If/Loop/Scan
    bodies rewritten by the rewrite steps, and (bodies, notes, seconds)."""
    if not any(step.kind == "bodies" for step in steps) or not holds_body_convs(model):
        return model, ([], [], 0.0)
    started = time.perf_counter()
    validate_model(model)               # a malformed body conv is named with its path in the
    validate_graph(to_graph(model))     # model, before its standalone form is looked at

    def rewrite(standalone: onnx.ModelProto, names: Names):
        graph, result = run_rewrites(to_graph(standalone), target, standalone, steps,
                                     sparse_inputs, names=names)
        if not result.records:
            return standalone, [], []
        return drop_own_opset(from_graph(graph, standalone)), result.records, result.notes

    model, bodies, notes = rewrite_bodies(model, rewrite)
    return model, (bodies, notes, time.perf_counter() - started)


def _note_bodies(result: RewriteResult, bodies: list[Body], notes: list[str],
                 seconds: float) -> None:
    result.bodies = bodies
    result.records += [r for b in bodies for r in b.records]
    result.notes += notes
    if seconds:
        result.timings["rewrite"] = result.timings.get("rewrite", 0.0) + seconds


def _verify_bodies(bodies: list[Body], tolerance: Tolerance,
                   progress: Callable[[Iterable], Iterable]) -> None:
    """A body's records on its standalone models (a body tensor is no output of the model):
    seeded random feeds of the types the body reads."""
    for body in bodies:
        feeds = make_inputs(body.original)
        reference = reference_run(body.original, feeds)
        verify_records(body.records, body.rewritten, feeds, tolerance, progress,
                       reference.engine)


def _note_inlined(result: RewriteResult, inlined, seconds: float) -> None:
    if inlined is None:
        return
    result.inlined = inlined.functions
    result.notes[:0] = inlined.notes
    result.timings["rewrite"] = result.timings.get("rewrite", 0.0) + seconds


@dataclass
class Current:
    """The model as the pipeline holds it now, and what is known of it: the graph it was
    exported from (a later step imports it from there, its weights not copied:
    ``gs_graph.reinferred``), whether it went out light, the tidy step's graph of it, its outputs
    in the local checks' run. A step that makes a new model makes a new Current, so what was
    known of the old one goes with it."""

    model: onnx.ModelProto
    graph: gs.Graph | None = None           # the graph ``model`` was exported from
    light: bool = False                     # large weights as stand-ins: without verification
    #                                         it only feeds the tidy step (ResNet-50 c256: one
    #                                         full export of 100 MB of weights less)
    tidy_graph: gs.Graph | None = None      # the tidy step's graph of it, where that holds what
    #                                         movement_legality reads (``_tidy``)
    outputs: dict | None = None             # its outputs in the local checks' run

    def imported(self) -> gs.Graph:
        """The model as a graph: the graph it was exported from, its shapes inferred afresh
        (``gs_graph.reinferred``: that graph itself, where it can be), where there is one. The
        exported model is what the later steps verify and return, so the graph may be changed
        in place (the tidy step does)."""
        return to_graph(self.model) if self.graph is None else reinferred(self.graph, self.model)


def run_pipeline(model: onnx.ModelProto, target: Target, *, steps: tuple[Step, ...] = PIPELINE,
                 verify: bool = True, feeds: Callable[[], dict[str, np.ndarray]] | None = None,
                 tolerance: Tolerance = Tolerance(),
                 progress: Callable[[Iterable], Iterable] = iter,
                 sparse_inputs: tuple[str, ...] = (), sparse_samples: dict | None = None,
                 ) -> tuple[onnx.ModelProto, RewriteResult]:
    """Every step of ``steps`` in order. Verification runs when ``verify`` and something was
    rewritten, on ``feeds()`` (made once, on first use); a mismatch is in the result, for the
    caller to fail on. The original proto comes back untouched when nothing was rewritten.
    A model below legacy.MIN_REWRITE_OPSET is rewritten in its up-converted form (noted)."""
    work, upgrade = for_rewriting(model)
    work, inlined, seconds = _inline(work, target, steps)
    work, bodies = _bodies(work, target, steps, tuple(sparse_inputs))
    graph, result = run_rewrites(to_graph(work), target, work, steps, sparse_inputs,
                                 sparse_samples=sparse_samples)
    _note_inlined(result, inlined, seconds)
    _note_bodies(result, *bodies)
    if not result.changed:
        tensor_legality(graph, target, result)
        return model, result
    light = not verify
    current = Current(drop_own_opset(from_graph(graph, work, {} if light else None)), graph,
                      light)
    if upgrade:
        result.notes.append(upgrade)
    reference = None            # the original's outputs and engine (verify.reference_run), once
    tidied_early = None         # the tidy step, when it ran before the local checks
    for step in steps:
        if step.kind in ("inline", "bodies", "rewrite") or step is tidied_early:
            continue
        started = time.perf_counter()
        if step.kind == "tidy":
            current = _tidy(current, target, step.passes, result)
        elif verify and step.scope == "local":
            if result.inputs is None:
                result.inputs = _feeds_that_fit(feeds, graph)
            in_bodies = {id(r) for b in result.bodies for r in b.records}
            records = [r for r in result.records if id(r) not in in_bodies]
            tidied_early = _tidy_early(steps, step, reference, current.model)
            untidied = current          # the records name its tensors: the checks run on it
            if tidied_early is not None:    # the model the end-to-end check compares, made now
                current = _tidy(current, target, tidied_early.passes, result)
                result.timings[tidied_early.timing] = time.perf_counter() - started
                started = time.perf_counter()
            if reference is None:       # the original's run folded into the checks' run
                reference, outputs, also = verify_with_reference(
                    model, records, untidied.model, result.inputs, tolerance, progress,
                    tidied=current.model if current is not untidied else None)
                if reference.fallback is not None:
                    result.notes.append(
                        f"local checks: the original model did not run in the checks' run "
                        f"({reference.fallback}); it ran on its own, and every check on "
                        f"{reference.engine}")
            else:
                outputs, also = verify_records(records, untidied.model, result.inputs,
                                               tolerance, progress, reference.engine), {}
            current.outputs = also if current is not untidied else outputs
            _verify_bodies(result.bodies, tolerance, progress)
        elif verify and step.scope == "end_to_end":
            if result.inputs is None:
                result.inputs = _feeds_that_fit(feeds, graph)
            reference = reference or reference_run(model, result.inputs)
            kind = "reassociating" if any(r.tolerance == "reassociating"
                                          for r in result.records) else "exact"
            result.end_to_end = verify_end_to_end(   # tidy left it as checked: no new run
                model, current.model, result.inputs, tolerance, kind, reference,
                outputs=current.outputs)
        else:
            continue
        result.timings[step.timing] = time.perf_counter() - started
    if current.light:           # no step replaced it: the model itself, exported for real
        current = replace(current, model=drop_own_opset(from_graph(current.graph, work)),
                          light=False)
    final = current.tidy_graph if current.tidy_graph is not None else current.imported()
    movement_legality(final, target, result)
    tensor_legality(final, target, result)
    return restore(current.model, model), result


def _feeds_that_fit(feeds: Callable[[], dict[str, np.ndarray]], graph: gs.Graph):
    """The verification feeds, refused (one line, exit 2) where the run would not fit in memory:
    onnxruntime would be killed, not fail. The estimate: the feeds plus memory.RUN_PEAK_FACTOR
    times every tensor of the rewritten graph whose size is known."""
    made = feeds()
    shapes = {}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.shape is not None:
            try:
                shapes[tensor.name] = (tensor.shape, np.dtype(tensor.dtype))
            except TypeError:       # no dtype known, or one numpy lacks (bfloat16)
                continue
    sizes = memory.known_sizes(shapes)
    if sizes:
        name = max(sizes, key=sizes.get)
        tensors = sum(sizes.values())
        memory.require(sum(v.nbytes for v in made.values()) + memory.RUN_PEAK_FACTOR * tensors,
                       f"{memory.RUN_PEAK_FACTOR}x the {memory.gib(tensors)} that the run's "
                       f"{len(sizes)} tensors add up to; the largest, {name!r}, is "
                       f"{memory.gib(sizes[name])}",
                       resizable=any(not isinstance(d, int) for t in graph.inputs
                                     for d in (t.shape or ())))
    return made


def _tidy_early(steps: tuple[Step, ...], local: Step, reference,
                rewritten: onnx.ModelProto) -> Step | None:
    """The tidy step after ``local`` when an end-to-end check follows it (and the original's
    run is still to be made) and the model is compared at onnxruntime's basic level (quantized):
    run before the local checks, its model is folded into their onnxruntime run, so the
    end-to-end check needs no session at that level of its own. A model compared at the full
    level is not: the end-to-end check loads it alone at that level anyway (it must load as a
    user loads it, ``verify.default_load_error``), and that session's run is the comparison.
    The local checks still run on the model the lowerings made (the records name its
    tensors)."""
    if optimization_level(rewritten) == "all":
        return None
    later = steps[steps.index(local) + 1:]
    tidy = [s for s in later if s.kind == "tidy"]
    if reference is not None or len(tidy) != 1 or not any(
            s.kind == "verify" and s.scope == "end_to_end" for s in later[later.index(tidy[0]):]):
        return None
    return tidy[0]


def _tidy(current: Current, target: Target, passes: tuple[GraphPass, ...],
          result: RewriteResult) -> Current:
    """The tidying passes over the rewritten model: what the lowerings cost at run time undone
    (Concat->Split round trips, sums a runtime cannot fuse into convs, Pads of Pads). The same
    Current where they change nothing, else the tidied model's. Either keeps the graph the
    passes left for ``movement_legality`` to judge without importing the model again, where it
    holds what that reads: the model's nodes in order, and, where the target limits tensor
    ranks, the shapes inference gives (nothing tidied)."""
    ctx = RewriteContext(graph=current.imported(), target=target,
                         opset=opset_version(current.model),
                         regroupable_sums=result.regroupable_sums)
    modified = False
    for gp in passes:
        outcome = gp.run(ctx, current.model)
        ctx.graph = outcome.graph
        result.notes += outcome.notes
        modified |= outcome.modified
    if not modified:
        current.tidy_graph = ctx.graph
        return current
    return Current(from_graph(ctx.graph, current.model), ctx.graph,
                   tidy_graph=ctx.graph if target.max_tensor_rank is None else None)


def check_model_legality(model: onnx.ModelProto, target: Target) -> RewriteResult:
    """What the target rejects, without rewriting anything (``--check-only``)."""
    return run_rewrites(to_graph(model), target, model, PIPELINE, dry_run=True)[1]
