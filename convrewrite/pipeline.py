"""The pass manager: find illegal convs, let the pass that owns the broken rule rewrite them, repeat
to a fixpoint, then say what is still illegal and why."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs

from .conv import CONV_OPS
from .decline import Decline
from .graph import from_graph, isolate_node, opset_version, to_graph
from .legality import check
from .naming import Names
from .build.onnx_read import spec_of
from .ops import DOMAIN
from .ops.reference import drop_own_opset
from .passes import DEFAULT_PASSES, GRAPH_PASSES, Pass, RewriteContext, conv_pass
from .passes.protocol import GraphPass
from .patterns import depthwise_separable_pairs
from .passes.chunk_fusion import fuse_chunks
from .passes.pad_fusion import fuse_pads
from .passes.sum_fusion import fuse_sums
from .record import Record, Remaining
from .target import Target

MAX_ITERATIONS = 16


@dataclass
class RewriteResult:
    records: list[Record] = field(default_factory=list)
    remaining: list[Remaining] = field(default_factory=list)
    convs_checked: int = 0
    regroupable_sums: set[str] = field(default_factory=set)
    recognised: list[str] = field(default_factory=list)    # patterns noted, left as they were


def conv_nodes(graph: gs.Graph) -> list[gs.Node]:
    return [n for n in graph.nodes if n.op in CONV_OPS and n.domain in ("", "ai.onnx", None)]


def name_unnamed_nodes(graph: gs.Graph) -> None:
    """Records and derived names need a name per conv; exporters sometimes leave them empty."""
    names = Names(n.name for n in graph.nodes if n.name)
    for i, node in enumerate(graph.nodes):
        if not node.name and node.op in CONV_OPS:
            node.name = names.fresh(f"{node.op}_{i}")


def run_passes(graph: gs.Graph, target: Target, like: onnx.ModelProto,
               passes: tuple[Pass, ...] = DEFAULT_PASSES,
               dry_run: bool = False,
               graph_passes: tuple[GraphPass, ...] = GRAPH_PASSES,
               sparse_inputs: tuple[str, ...] = ()) -> tuple[gs.Graph, RewriteResult]:
    """Rewrite ``graph`` to a fixpoint; ``like`` is the model it came from (opsets, ir_version).
    Pattern rewrites (shifts, shuffles, our ops) run first, once; then the conv passes. After
    each round that changed something, shapes are inferred afresh, so the next round's
    legality checks (input sizes, batch) see the real extents of what the passes emitted.
    ``passes`` may hold registered lowerings (``lowerings``) beside conv passes."""
    passes = tuple(conv_pass(p) for p in passes)
    name_unnamed_nodes(graph)
    names = Names.in_graph(graph)
    ctx = RewriteContext(graph=graph, target=target, opset=opset_version(like), names=names,
                         sparse_inputs=tuple(sparse_inputs))
    result = RewriteResult()
    declined: dict[str, list[str]] = {}
    result.recognised += depthwise_separable_pairs(graph)
    unlowered: dict[str, tuple[str, str]] = {}
    for gp in () if dry_run else graph_passes:
        for _ in range(MAX_ITERATIONS):     # again while it rewrites: shapes behind a rewrite
            outcome = gp.apply(ctx, like)   # (a run-time Reshape's) may become known
            result.records += outcome.records
            if outcome.records:
                graph = to_graph(from_graph(graph, like))
                ctx.graph = graph
            else:
                break
        result.recognised += outcome.recognised
        for node, op, reason in outcome.unlowered:
            unlowered.setdefault(node, (op, reason))
    for _ in range(0 if dry_run else MAX_ITERATIONS):
        changed = False
        for node in conv_nodes(graph):
            spec = spec_of(node)
            if isinstance(spec, Decline):
                declined.setdefault(node.name, []).append(spec.reason)
                continue
            violations = check(spec, target)
            rules = {v.rule for v in violations}
            for p in passes:
                if not rules & p.fixes:
                    continue
                before = isolate_node(node, graph, like)
                outcome = p.run(node, spec, violations, ctx)
                if isinstance(outcome, Record):
                    outcome.before = before
                    result.records.append(outcome)
                    changed = True
                    break
                reason = f"{p.name}: {outcome}"
                if reason not in declined.setdefault(node.name, []):
                    declined[node.name].append(reason)
        if not changed:
            break
        graph = to_graph(from_graph(graph, like))
        ctx.graph = graph
    result.regroupable_sums = ctx.regroupable_sums
    live = {n.name: n for n in graph.nodes if n.outputs}
    for name, (op, reason) in unlowered.items():
        if name in live:
            result.remaining.append(Remaining(name, op, op, [], [reason]))
    for node in live.values():
        if node.domain == DOMAIN and node.name not in unlowered:
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
        if violations:
            reasons = list(declined.get(node.name, []))
            owners = {r: p.name for p in passes for r in p.fixes}
            for v in violations:
                if v.rule not in owners:
                    reasons.append(f"no lowering for rule {v.rule} on this target yet")
                elif dry_run:
                    reasons.append(f"{v.rule}: {owners[v.rule]} would rewrite it")
            result.remaining.append(Remaining(node.name, node.op, spec.describe(), violations,
                                              reasons))
    return graph, result


def rewrite_model(model: onnx.ModelProto, target: Target,
                  passes: tuple[Pass, ...] = DEFAULT_PASSES,
                  sparse_inputs: tuple[str, ...] = (),
                  graph_passes: tuple[GraphPass, ...] = GRAPH_PASSES,
                  ) -> tuple[onnx.ModelProto, RewriteResult]:
    """Rewrite a model; when nothing changes the original proto is returned untouched.
    ``sparse_inputs`` names tensors known to be mostly zero (or masks): the convs reading them
    become SparseConvs (passes.dense_to_sparse)."""
    graph, result = run_passes(to_graph(model), target, model, passes,
                               graph_passes=graph_passes, sparse_inputs=tuple(sparse_inputs))
    if not result.records:
        return model, result
    return drop_own_opset(from_graph(graph, model)), result


def tidy_split_graph(model: onnx.ModelProto, regroupable_sums: set[str],
                     chunks: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """Undo what the lowerings cost at run time: Concat→Split round trips (exact, see
    passes.chunk_fusion), sums a runtime cannot fuse into convs (passes.sum_fusion) and Pads
    of Pads (passes.pad_fusion)."""
    graph = to_graph(model)
    notes = []
    removed = fuse_chunks(graph) if chunks else 0
    if removed:
        notes.append(f"chunk fusion: {removed} Concat->Split round trips removed (the ops "
                     "between them run per channel chunk)")
    moved = fuse_sums(graph, regroupable_sums)
    if moved:
        notes.append(f"sum fusion: {moved} regroupings so that each Add has a conv operand")
    pads = fuse_pads(graph, opset_version(model))
    if pads:
        notes.append(f"pad fusion: {pads} Pad pairs merged into one")
    if not notes:
        return model, notes
    return from_graph(graph, model), notes


def check_model_legality(model: onnx.ModelProto, target: Target) -> RewriteResult:
    """What the target rejects, without rewriting anything (``--check-only``)."""
    return run_passes(to_graph(model), target, model, dry_run=True)[1]
