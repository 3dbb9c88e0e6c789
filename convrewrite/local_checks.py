"""Every record's local check as one model: the rewritten model with each record's original piece
beside it, renamed apart and reading the real activations of the rewritten graph.

One session and one run then give, for every record, its replacement's outputs (the rewritten
graph's own tensors) and its original's outputs on the same activations, instead of two sessions
per record (209 of 233 s on a 1-D net tiled into 2,786 rewrites). The rewritten model's outputs
come out of the same run. A record whose piece cannot be merged (a subgraph attribute, local
functions, an opset that differs from the rewritten model's) is checked alone, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from . import ort_weights
from .errors import BadInputError
from .graph import tensor_nbytes
from .ops.reference import standard_reference
from .ort_weights import Apart

PREFIX = "verify"           # every renamed name starts with a prefix no rewritten name starts with
CHUNK_BYTES = 1 << 30       # original pieces' weights per merged model (more: another run)


@dataclass
class Merged:
    """The merged model and, per record (by position in the chunk), its original's output names
    in it (in the order of ``[record.output_name, *record.more_outputs]``)."""

    model: onnx.ModelProto                                  # large weights as stand-ins
    originals: dict[int, list[str]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)        # every tensor the checks read
    reference: dict[str, str] = field(default_factory=dict)  # original model's outputs, renamed
    tidied: dict[str, str] = field(default_factory=dict)     # the tidied model's, renamed
    arrays: dict[str, np.ndarray] = field(default_factory=dict)   # the stand-ins' values

    @property
    def apart(self) -> Apart:
        """The model to run: its stand-ins and their arrays."""
        return Apart(self.model, self.arrays)


class Producers:
    """Which node of the rewritten graph writes each tensor, made once for every record."""

    def __init__(self, model: onnx.ModelProto):
        self.nodes = list(model.graph.node)
        self.by_output = {o: i for i, n in enumerate(self.nodes) for o in n.output if o}
        self.initializers = {t.name for t in model.graph.initializer}

    def piece(self, inputs: list[str], outputs: list[str]) -> list[int]:
        """Indices (in graph order) of the nodes computing ``outputs`` from ``inputs`` and
        constants; a piece that reads any other tensor cannot be isolated (BadInputError)."""
        keep, stack, seen = set(), list(outputs), set()
        while stack:
            name = stack.pop()
            if name in seen or name in inputs or name in self.initializers or not name:
                continue
            seen.add(name)
            index = self.by_output.get(name)
            if index is None:
                raise BadInputError(
                    f"cannot isolate {outputs[0]!r}: it depends on {name!r}, which is "
                    f"neither {' nor '.join(map(repr, inputs))} nor a constant")
            if index not in keep:
                keep.add(index)
                stack.extend(self.nodes[index].input)
        return sorted(keep)


def mergeable(before: onnx.ModelProto, rewritten: onnx.ModelProto) -> bool:
    """Whether ``before`` can sit in ``rewritten``'s graph with every name renamed: no subgraph
    (its names would reach outer scopes), no local function, no opset of another version."""
    if before.functions or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                               for n in before.graph.node for a in n.attribute):
        return False
    versions = {o.domain or "ai.onnx": o.version for o in rewritten.opset_import}
    return all(versions.get(o.domain or "ai.onnx", o.version) == o.version
               for o in before.opset_import)


def _prefix(model: onnx.ModelProto) -> str:
    g = model.graph
    names = {n for node in g.node for n in (node.name, *node.input, *node.output)} | \
        {t.name for t in g.initializer} | {v.name for v in (*g.input, *g.output, *g.value_info)}
    prefix, k = PREFIX, 0
    while any(n.startswith(prefix) for n in names):
        k += 1
        prefix = f"{PREFIX}{k}"
    return prefix


def _renamed(before: "onnx.ModelProto | Apart", tag: str, keep: set[str],
             shared: dict[str, tuple] | None = None):
    """``before``'s nodes and initializers with every name but ``keep`` (the activations it
    reads) prefixed by ``tag``; an initializer equal to one in ``shared`` (name -> its name in
    the merged graph, the tensor, and its array where the tensor is a stand-in) is read from
    there, not copied. A large weight goes in as a stand-in, its array into the fourth value
    (by its name in the merged graph): no weight is copied into the merged model."""
    source = before if isinstance(before, Apart) else Apart(before)
    model = source.model
    shared = shared or {}
    same = {t.name: shared[t.name][0] for t in model.graph.initializer
            if t.name in shared and ort_weights.same_values(t, *shared[t.name][1:])}

    def name(n: str) -> str:
        return same.get(n) or (n if not n or n in keep else tag + n)

    nodes = []
    for k, node in enumerate(model.graph.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = tag + (node.name or f"{node.op_type}#{k}")     # unnamed nodes stay distinct
        copy.input[:] = [name(n) for n in node.input]
        copy.output[:] = [name(n) for n in node.output]
        nodes.append(copy)
    read = ort_weights.read_names(model)
    inits, arrays = [], {}
    for t in model.graph.initializer:
        if t.name in same:
            continue
        if t.name in source.arrays and ort_weights.is_stand_in(t):
            arrays[name(t.name)] = source.arrays[t.name]
        elif ort_weights.goes_apart(t, read) and not _kept(t):
            arrays[name(t.name)] = ort_weights.array_of(t)
        else:
            copy = onnx.TensorProto()
            copy.CopyFrom(t)
            copy.name = name(t.name)
            inits.append(copy)
            continue
        inits.append(ort_weights.stand_in(t, name(t.name)))
    return nodes, inits, name, arrays


def _kept(t: onnx.TensorProto) -> bool:
    """int8 weights stay in the protobuf: ``exact_kernels`` reads a QLinearConv's to move it."""
    return t.data_type == onnx.TensorProto.INT8


def apart(model: onnx.ModelProto) -> Apart:
    """``model`` as the merged model takes it: its large weights read once, as arrays
    (``ort_weights.apart``; int8 ones kept, ``_kept``)."""
    return ort_weights.apart(model, keep=_kept)


def _sources(model: Apart) -> dict[str, tuple]:
    """``shared``'s entries for ``model``'s initializers, by their own names."""
    return {t.name: (t.name, t, model.arrays.get(t.name) if ort_weights.is_stand_in(t) else None)
            for t in model.model.graph.initializer}


def foldable(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> bool:
    """Whether the original model itself can sit in the merged graph (its reference run made in
    the same run, sharing its weights with the records' originals): mergeable, the same ir
    version and the same graph inputs by name and type."""
    def inputs(m):
        inits = {t.name for t in m.graph.initializer}
        return [i.SerializeToString() for i in m.graph.input if i.name not in inits]
    return mergeable(original, rewritten) and original.ir_version == rewritten.ir_version \
        and inputs(original) == inputs(rewritten)


def chunks(befores: list[onnx.ModelProto]) -> list[list[int]]:
    """Positions of ``befores`` grouped so that no group holds more than CHUNK_BYTES of weights
    (a huge model's originals do not all sit in one session beside it)."""
    groups, size = [[]], 0
    for i, before in enumerate(befores):
        weight = sum(_nbytes(t) for t in before.graph.initializer)
        if groups[-1] and size + weight > CHUNK_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += weight
    return groups


def _nbytes(t: onnx.TensorProto) -> int:
    """A weight's bytes from its dims and type (protobuf's ByteSize encodes the tensor to count
    them: 0.1 s for ResNet-50's 31 pieces); ByteSize for a type without a fixed size."""
    size = tensor_nbytes(t)
    return t.ByteSize() if size is None else size


def merge(rewritten: "onnx.ModelProto | Apart", records, befores: list[onnx.ModelProto],
          producers: Producers, original: "onnx.ModelProto | Apart | None" = None,
          tidied: onnx.ModelProto | None = None) -> Merged:
    """``rewritten`` with each record's original piece (``befores``: standard_reference'd) in
    its graph, reading the tensors the record's replacement reads; every record's replacement
    and original outputs are graph outputs. ``original`` (``foldable``, standard_reference'd):
    the whole original model too, on the same graph inputs, its outputs renamed
    (``Merged.reference``); a piece's weight equal to the original's is read from it.
    ``tidied`` (``foldable``, standard_reference'd): the rewritten model after the tidy passes,
    on the same graph inputs, its outputs renamed (``Merged.tidied``); a weight of it equal to
    the rewritten model's is read from there. ``rewritten`` and ``original`` may come as
    ``Apart``s (``apart``), their weights read out once for several merges or sessions; the
    merged model holds stand-ins for every large weight, ``Merged.arrays`` their values."""
    base = rewritten if isinstance(rewritten, Apart) else apart(rewritten)
    model = onnx.ModelProto()
    model.CopyFrom(base.model)
    g = model.graph
    prefix = _prefix(base.model)
    merged = Merged(model, arrays=dict(base.arrays))
    have = {o.name for o in g.output}
    domains = {o.domain for o in model.opset_import}
    wanted: list[str] = []
    shared: dict[str, tuple] = {}

    def add(nodes, inits, arrays) -> None:
        g.node.extend(nodes)
        g.initializer.extend(inits)
        merged.arrays.update(arrays)
    if original is not None:
        source = original if isinstance(original, Apart) else apart(original)
        feeds = {i.name for i in source.model.graph.input} - \
            {t.name for t in source.model.graph.initializer}
        nodes, inits, name, arrays = _renamed(source, f"{prefix}o/", feeds)
        add(nodes, inits, arrays)
        shared = {k: (name(k), *v[1:]) for k, v in _sources(source).items()}
        merged.reference = {o.name: name(o.name) for o in source.model.graph.output}
        wanted += merged.reference.values()
    if tidied is not None:
        feeds = {i.name for i in tidied.graph.input} - {t.name for t in tidied.graph.initializer}
        nodes, inits, name, arrays = _renamed(tidied, f"{prefix}t/", feeds, _sources(base))
        add(nodes, inits, arrays)
        merged.tidied = {o.name: name(o.name) for o in tidied.graph.output}
        wanted += merged.tidied.values()
    for i, (record, before) in enumerate(zip(records, befores)):
        reads = [record.input_name, *record.more_inputs]
        producers.piece(reads, [record.output_name, *record.more_outputs])
        nodes, inits, name, arrays = _renamed(before, f"{prefix}{i}/", set(reads), shared)
        add(nodes, inits, arrays)
        for info in before.graph.input:         # an input it reads that the record does not
            if info.name not in reads and info.name not in {t.name for t in before.graph.initializer}:
                extra = g.input.add()
                extra.CopyFrom(info)
                extra.name = name(info.name)
        for o in before.opset_import:
            if o.domain not in domains:
                model.opset_import.append(o)
                domains.add(o.domain)
        merged.originals[i] = [name(n) for n in (record.output_name, *record.more_outputs)]
        wanted += [record.output_name, *record.more_outputs, *merged.originals[i]]
    for n in dict.fromkeys(wanted):
        if n not in have:
            g.output.add().name = n
            have.add(n)
    merged.outputs = list(dict.fromkeys(wanted))
    return merged


def originals(records) -> list[onnx.ModelProto]:
    """Each record's original piece with our domain's ops as their standard definitions."""
    return [standard_reference(r.before) for r in records]
