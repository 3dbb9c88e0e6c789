"""Convs in the If/Loop/Scan bodies of the main graph, rewritten like the main graph's.

The passes see one graph; a body reads tensors of the graph around it, so each body with a conv is
made a model of its own: its formal inputs, the outer initializers and Constants it reads copied
in, every other outer tensor it reads a typed graph input. That model goes through the same
rewriting (one model-wide ``Names``, so what it adds is unique in the whole model), and its nodes
and new initializers go back into the body. A body tensor cannot be an output of the model, so
its records are verified on the standalone models (``Body``), the whole model end to end as
usual. Bodies nested deeper, and a body whose interface the rewrite would change, are left as
they are (and stay reported by the final legality check).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..conv import CONV_OPS
from ..graph import infer_shapes
from ..gs_graph import to_graph
from ..naming import Names
from ..record import Record


@dataclass
class Body:
    """One rewritten body: its path (``branch/then_branch``), the standalone model before and
    after, and the records of its rewrites (their ``node`` prefixed with the path)."""

    path: str
    original: onnx.ModelProto
    rewritten: onnx.ModelProto
    records: list[Record] = field(default_factory=list)


Rewrite = Callable[[onnx.ModelProto, Names], "tuple[onnx.ModelProto, list[Record], list[str]]"]


def _defined(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.output)
        for sub in _subgraphs(node):
            names |= _defined(sub)
    return names


def _read(graph: onnx.GraphProto) -> list[str]:
    seen: list[str] = []
    for node in graph.node:
        for name in [*node.input, *(n for sub in _subgraphs(node) for n in _read(sub))]:
            if name and name not in seen:
                seen.append(name)
    return seen


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [g for a in node.attribute for g in ([a.g] if a.type == a.GRAPH else a.graphs)]


def _constant(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """A Constant node's value as a tensor named like its output (``value`` and the scalar and
    list forms), else None."""
    for a in node.attribute:
        if a.name == "value":
            value = numpy_helper.to_array(a.t)
        elif a.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = np.asarray(helper.get_attribute_value(a),
                               dtype=np.float32 if "float" in a.name else np.int64)
        else:
            continue
        return numpy_helper.from_array(value, node.output[0])
    return None


class _Outer:
    """What a body may read from the main graph: initializers, Constants, typed tensors."""

    def __init__(self, model: onnx.ModelProto):
        inferred = infer_shapes(model).graph
        self.tensors = {t.name: t for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                tensor = _constant(node)
                if tensor is not None:
                    self.tensors[tensor.name] = tensor
        self.types = {v.name: v for v in [*inferred.input, *inferred.value_info,
                                            *inferred.output]}


def _typed(info: onnx.ValueInfoProto) -> bool:
    t = info.type
    return t.HasField("tensor_type") and t.tensor_type.elem_type != 0 and \
        t.tensor_type.HasField("shape")


def _standalone(body: onnx.GraphProto, node: onnx.NodeProto, outer: _Outer,
                model: onnx.ModelProto) -> tuple[onnx.ModelProto, set[str]] | None:
    """The body as a model, and the names of the outer tensors copied into it; None when a
    tensor it reads has no known type."""
    inputs = []
    for i, info in enumerate(body.input):
        if not _typed(info) and node.op_type == "Loop" and i >= 2 and \
                len(node.input) > i and node.input[i] in outer.types:
            info = onnx.ValueInfoProto()        # a carried value: the type it enters with
            info.CopyFrom(outer.types[node.input[i]])
            info.name = body.input[i].name
        if not _typed(info):
            return None
        inputs.append(info)
    copied, inits = set(), list(body.initializer)
    defined = _defined(body)
    for name in _read(body):
        if name in defined:
            continue
        if name in outer.tensors:
            inits.append(outer.tensors[name])
            copied.add(name)
        elif name in outer.types and _typed(outer.types[name]):
            inputs.append(outer.types[name])
        else:
            return None
    graph = helper.make_graph(list(body.node), body.name or "body", inputs, list(body.output),
                              inits)
    standalone = helper.make_model(graph, opset_imports=list(model.opset_import),
                                   functions=list(model.functions))
    standalone.ir_version = model.ir_version
    return standalone, copied


def _node_names(graph: onnx.GraphProto) -> list[str]:
    return [name for node in graph.node
            for name in [node.name, *(n for sub in _subgraphs(node) for n in _node_names(sub))]]


def _own_conv_names(standalone: onnx.ModelProto, taken: Counter, names: Names) -> list[str]:
    """Each conv of the body named uniquely in the whole model (a lowering derives the names of
    what it adds, weights included, from the conv's name): one whose name another node has too,
    or none, renamed. Returns ``old -> new`` for the renamed."""
    renamed = []
    for i, node in enumerate(standalone.graph.node):
        if node.op_type in CONV_OPS and (not node.name or taken[node.name] > 1):
            new = names.fresh(node.name or f"{node.op_type}_{i}")
            renamed.append(f"{node.name or '(unnamed)'} -> {new}")
            taken[node.name] -= 1
            taken[new] += 1
            node.name = new
    return renamed


def _put_back(body: onnx.GraphProto, rewritten: onnx.ModelProto, copied: set[str],
              outer: _Outer) -> bool:
    """The rewritten nodes and new initializers into ``body``; False (body untouched) when the
    rewrite changed its interface or an outer tensor it copied."""
    graph = rewritten.graph
    if [o.name for o in graph.output] != [o.name for o in body.output] or \
            [i.name for i in graph.input[:len(body.input)]] != [i.name for i in body.input]:
        return False
    inits = []
    for t in graph.initializer:
        if t.name not in copied:
            inits.append(t)
        elif t.SerializeToString() != outer.tensors[t.name].SerializeToString():
            return False
    del body.node[:]
    body.node.extend(graph.node)
    del body.initializer[:]
    body.initializer.extend(inits)
    del body.value_info[:]
    return True


def holds_body_convs(model: onnx.ModelProto) -> bool:
    """Whether a node of the main graph has a body with a conv of its own."""
    return any(c.op_type in CONV_OPS for n in model.graph.node for sub in _subgraphs(n)
               for c in sub.node)


def rewrite_bodies(model: onnx.ModelProto,
                   rewrite: Rewrite) -> tuple[onnx.ModelProto, list[Body], list[str]]:
    """``model`` with the convs of its main graph's bodies rewritten by ``rewrite`` (standalone
    model, the model-wide names -> rewritten model, records, notes), the bodies rewritten, and
    the notes (``model`` itself when no body changed)."""
    if not holds_body_convs(model):
        return model, [], []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    outer = _Outer(model)
    names = Names.in_graph(to_graph(model))
    taken = Counter(_node_names(model.graph))
    bodies, notes = [], []
    for i, node in enumerate(out.graph.node):
        for attr in node.attribute:
            subs = [attr.g] if attr.type == attr.GRAPH else list(attr.graphs)
            for j, body in enumerate(subs):
                if not any(c.op_type in CONV_OPS for c in body.node):
                    continue
                key = attr.name if len(subs) == 1 else f"{attr.name}.{j}"
                path = f"{node.name or f'{node.op_type}_{i}'}/{key}"
                made = _standalone(body, node, outer, model)
                if made is None:
                    notes.append(f"{path}: not rewritten, a tensor it reads has no known type")
                    continue
                standalone, copied = made
                renamed = _own_conv_names(standalone, taken, names)
                original = onnx.ModelProto()
                original.CopyFrom(standalone)
                rewritten, records, body_notes = rewrite(standalone, names)
                if not records:
                    continue
                if not _put_back(body, rewritten, copied, outer):
                    notes.append(f"{path}: not rewritten, the rewrite would change its "
                                 "interface")
                    continue
                for r in records:
                    r.node = f"{path}/{r.node}"
                if renamed:
                    notes.append(f"{path}: convs renamed to be unique in the model: "
                                 + ", ".join(renamed))
                notes += [f"{path}: {n}" for n in body_notes]
                bodies.append(Body(path, original, rewritten, records))
    return (out, bodies, notes) if bodies else (model, [], notes)
