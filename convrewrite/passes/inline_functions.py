"""Model-local functions whose conv the target rejects, inlined before the patterns step.

The lowerings rewrite the main graph only (walk.py), so a conv inside a function (TorchScript and
dynamo exports make them) would stay illegal. A function's weight is usually one of its inputs,
of unknown shape in the function itself, so each conv is checked where it lands when inlined, at
its call site's shapes; only functions with a conv the target rejects there are inlined (with the
functions that call them on the way from the main graph). The others stay functions, and a conv
inlined into an If/Loop body stays reported by the final legality check. onnx's inliner renames
what it inlines (``fconv`` -> ``fconv__1``): a note names each function inlined, why, and the
new names. ``--check-only`` does not come here: it reports the functions as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx
from onnx import inliner

from ..build.onnx_read import conv_nodes, spec_of
from ..conv import CONV_OPS
from ..decline import Decline
from ..gs_graph import to_graph
from ..legality import check
from ..target import Target

FunctionId = tuple[str, str]
_TAG = "convrewrite.inline."
_TAGGED = re.compile(re.escape(_TAG) + r"(\d+)_(\d+)\.")


@dataclass(frozen=True)
class Inlined:
    """What inlining did: the functions inlined (``domain::name``) and a note for each."""

    functions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _fid(function: onnx.FunctionProto) -> FunctionId:
    return (function.domain, function.name)


def _is_conv(node: onnx.NodeProto) -> bool:
    return node.op_type in CONV_OPS and node.domain in ("", "ai.onnx")


def _calls(nodes, local: set[FunctionId]) -> set[FunctionId]:
    """The local functions ``nodes`` call directly (a call inside an If/Loop body is not one:
    inlined there, its conv would still not be in the main graph)."""
    return {(n.domain, n.op_type) for n in nodes if (n.domain, n.op_type) in local}


def _reach(model: onnx.ModelProto) -> tuple[set[FunctionId], dict[FunctionId, set[FunctionId]]]:
    """The functions reachable from the main graph by direct calls that hold a conv (themselves
    or through a function they call), and what each of those reaches."""
    local = {_fid(f) for f in model.functions}
    calls = {_fid(f): _calls(f.node, local) for f in model.functions}
    reach: dict[FunctionId, set[FunctionId]] = {}
    for fid in calls:
        seen, todo = set(), list(calls[fid])
        while todo:
            nxt = todo.pop()
            if nxt not in seen:
                seen.add(nxt)
                todo += calls[nxt]
        reach[fid] = seen
    own = {_fid(f) for f in model.functions if any(_is_conv(n) for n in f.node)}
    holding = {fid for fid in calls if fid in own or reach[fid] & own}
    top = _calls(model.graph.node, local)
    reachable = {fid for fid in top | set().union(*(reach[t] for t in top)) if fid in holding}
    return reachable, reach


def call_site_verdicts(model: onnx.ModelProto, candidates: list[FunctionId],
                       target: Target) -> dict[tuple[FunctionId, str], tuple[list, bool]]:
    """Each conv of the candidate functions checked where it lands, at every call site: the
    rules it breaks there, and whether some call site leaves it uncheckable. Found by inlining
    every candidate into a copy whose conv names are tagged with their function, then checking
    the main graph's convs."""
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    index = {fid: i for i, fid in enumerate(candidates)}
    original: dict[tuple[int, int], str] = {}
    for function in trial.functions:
        if _fid(function) not in index:
            continue
        for j, node in enumerate(function.node):
            if _is_conv(node):
                original[(index[_fid(function)], j)] = node.name or f"{node.op_type} #{j}"
                node.name = f"{_TAG}{index[_fid(function)]}_{j}."
    graph = to_graph(inliner.inline_selected_functions(trial, candidates))
    verdicts: dict[tuple[FunctionId, str], tuple[list, bool]] = {}
    for node in conv_nodes(graph):
        tag = _TAGGED.match(node.name or "")
        if not tag:
            continue                    # not from a function
        key = (candidates[int(tag.group(1))], original[(int(tag.group(1)), int(tag.group(2)))])
        broken, unknown = verdicts.get(key, ([], False))
        spec = spec_of(node)
        if isinstance(spec, Decline):   # still uncheckable here: stays reported
            verdicts[key] = (broken, True)
        else:
            verdicts[key] = (broken + check(spec, target), unknown)
    return verdicts


def legal_at_call_sites(model: onnx.ModelProto, target: Target) -> set[tuple[str, str]]:
    """(``domain::name``, conv name) of every function conv that fits ``target`` at each of its
    call sites: a conv whose weight is a function input has no shape in the function itself,
    so this is where it can be judged. Empty when the inliner cannot say."""
    candidates, _ = _reach(model)
    try:
        verdicts = call_site_verdicts(model, sorted(candidates), target)
    except Exception:           # noqa: BLE001 - onnx's inliner and shape inference raise many
        return set()            # types; the convs then stay reported as uncheckable
    return {("::".join(fid), conv) for (fid, conv), (broken, unknown) in verdicts.items()
            if not broken and not unknown}


def _rejected(model: onnx.ModelProto, candidates: list[FunctionId],
              target: Target) -> dict[FunctionId, tuple[str, str]]:
    """Each candidate with a conv the target rejects at some call site: the conv's name in the
    function and the first rule it breaks."""
    found: dict[FunctionId, tuple[str, str]] = {}
    for (fid, conv), (broken, _) in call_site_verdicts(model, candidates, target).items():
        if broken and fid not in found:
            found[fid] = (conv, broken[0].message)
    return found


def _renamed(before: onnx.ModelProto, after: onnx.ModelProto, names: set[str]) -> list[str]:
    """``old -> new`` for the main graph's new convs that onnx's inliner derived from ``names``."""
    old = {n.name for n in before.graph.node}
    pairs = []
    for node in after.graph.node:
        if _is_conv(node) and node.name not in old:
            base = re.sub(r"(__\d+)+$", "", node.name)
            if base in names:
                pairs.append(f"{base} -> {node.name}")
    return pairs


def inline_rejected_functions(model: onnx.ModelProto,
                              target: Target) -> tuple[onnx.ModelProto, Inlined]:
    """``model`` with every function holding a conv ``target`` rejects inlined, and what was
    (``model`` itself when nothing was)."""
    candidates, reach = _reach(model)
    if not candidates:
        return model, Inlined()
    ordered = sorted(candidates)
    try:
        rejected = _rejected(model, ordered, target)
        chosen = [fid for fid in ordered if fid in rejected or reach[fid] & rejected.keys()]
        if not chosen:
            return model, Inlined()
        inlined = inliner.inline_selected_functions(model, chosen)
    except Exception as exc:    # noqa: BLE001 - onnx's inliner and shape inference raise many
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]   # types
        return model, Inlined(notes=(f"model-local functions not inlined: {first}",))
    notes = []
    for fid in chosen:
        name = "::".join(fid)
        if fid in rejected:
            conv, why = rejected[fid]
            function = next(f for f in model.functions if _fid(f) == fid)
            renamed = _renamed(model, inlined, {n.name for n in function.node if _is_conv(n)})
            notes.append(f"inlined model-local function {name}: its conv {conv} is not legal "
                         f"on {target.name} ({why}) and only the main graph is rewritten"
                         + (f"; renamed on inlining: {', '.join(renamed)}" if renamed else ""))
        else:
            via = ", ".join("::".join(f) for f in sorted(reach[fid] & rejected.keys()))
            notes.append(f"inlined model-local function {name}: it calls {via}")
    return inlined, Inlined(tuple("::".join(f) for f in chosen), tuple(notes))
