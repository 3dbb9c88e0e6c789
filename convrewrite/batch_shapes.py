"""Shapes that shape inference leaves unknown only because they are computed from the batch.

A TorchScript export writes a Reshape's target as Shape(x) arithmetic (timm ResNeSt's radix
split: Gather(Shape(x), 1) -> Div -> Cast -> Concat -> Reshape), and with a symbolic batch onnx's
inference names the result 'unk__k' even where the dim is fixed. A copy of the model with the
inputs' batch bound to a few probe values, its shape arithmetic folded (``shape_folding``: only
Shape of tensors of known shape and integer ops after it, never data), tells each such dim: the
same at every probe is a constant, k * batch at every probe is the batch symbol (times k);
anything else stays unknown, with the reason. The model's interface (its inputs and outputs) is
never touched: the batch stays symbolic there; only the value_info of inner tensors is filled.
"""

from __future__ import annotations

import onnx

from .decline import Decline
from .graph import copy_model, light_copy
from .shape_folding import folded_shapes

PROBE_BATCHES = (2, 3, 5)       # distinct, so a constant and a multiple of the batch differ


def _dims(value: onnx.ValueInfoProto) -> list | None:
    """The dims of a tensor's type (an int, a symbol, or None), None where its rank is
    unknown."""
    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor_type.shape.dim]


def batch_symbol(model: onnx.ModelProto) -> str | None:
    """The one symbol the graph inputs' batch (dim 0) goes by, where no other input dim is
    symbolic; else None."""
    symbols, others = set(), False
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        dims = _dims(value)
        if value.name in initializers or not dims:
            continue
        if isinstance(dims[0], str):
            symbols.add(dims[0])
        others |= any(not isinstance(d, int) for d in dims[1:])
    return next(iter(symbols)) if len(symbols) == 1 and not others else None


def batch_multiple(dim, symbol: str | None) -> int | None:
    """k where ``dim`` is the batch symbol times k as ``learn`` writes it ('N' or 'N*k');
    None for any other dim."""
    if symbol is None or not isinstance(dim, str):
        return None
    if dim == symbol:
        return 1
    head, star, k = dim.partition("*")
    return int(k) if star and head == symbol and k.isdigit() and int(k) > 0 else None


def _unknown(dims: list | None, known: set[str]) -> bool:
    return dims is None or any(not isinstance(d, int) and d not in known for d in dims)


def _at_batch(model: onnx.ModelProto, symbol: str, batch: int
              ) -> dict[str, onnx.ValueInfoProto]:
    """Every inner tensor's type with the inputs' batch bound to ``batch``."""
    trial = light_copy(model)
    for value in trial.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param == symbol:
            dims[0].dim_value = batch
    del trial.graph.value_info[:]
    inferred = folded_shapes(trial)
    return {v.name: v for v in inferred.graph.value_info}


def learn(model: onnx.ModelProto, names: list[str] | None = None
          ) -> dict[str, tuple[list, int] | Decline]:
    """For each inner tensor (of ``names``, or every node output) whose shape inference left
    a dim unknown: (its dims learned from the probe batches: ints, and the batch symbol as 'N'
    or 'N*k'; its element type), or the reason they cannot be."""
    interface = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    interface |= {t.name for t in model.graph.initializer}
    symbol = batch_symbol(model)
    known = {symbol} if symbol else set()
    shapes = {v.name: _dims(v) for v in model.graph.value_info}
    every = [o for node in model.graph.node for o in node.output if o]
    wanted = [n for n in (names if names is not None else every)
              if n not in interface and _unknown(shapes.get(n), known)]
    if not wanted:
        return {}
    if symbol is None:
        return {n: Decline("the model's inputs have no single symbolic batch (or other dims are "
                           "symbolic too)") for n in wanted}
    probes = [_at_batch(model, symbol, b) for b in PROBE_BATCHES]
    found = {}
    for name in wanted:
        values = [p.get(name) for p in probes]
        dims = _learned(shapes.get(name), [_dims(v) if v is not None else None
                                           for v in values], symbol)
        found[name] = dims if isinstance(dims, Decline) else \
            (dims, values[0].type.tensor_type.elem_type)
    return found


def _learned(dims: list | None, probed: list[list | None], symbol: str) -> list | Decline:
    """The dims, each unknown one a constant or a multiple of the batch; or why not."""
    for found, batch in zip(probed, PROBE_BATCHES):
        if found is None or any(not isinstance(d, int) for d in found):
            return Decline(f"shape inference cannot tell it even at batch {batch}")
    if len({len(p) for p in probed}) > 1 or (dims is not None and len(dims) != len(probed[0])):
        return Decline("its rank differs between batches")
    out = []
    for i, values in enumerate(zip(*probed)):
        if dims is not None and (isinstance(dims[i], int) or dims[i] == symbol):
            out.append(dims[i])
        elif len(set(values)) == 1:
            out.append(values[0])
        elif all(v % b == 0 and v // b == values[0] // PROBE_BATCHES[0]
                 for v, b in zip(values, PROBE_BATCHES)):
            k = values[0] // PROBE_BATCHES[0]
            out.append(symbol if k == 1 else f"{symbol}*{k}")
        else:
            at = ", ".join(f"{v} at batch {b}" for v, b in zip(values, PROBE_BATCHES))
            return Decline(f"its dim {i} is neither constant nor a multiple of the batch ({at})")
    return out


def with_learned_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (shapes inferred) with every inner tensor's unknown dims filled in where the
    probe batches tell them; the model itself where none is unknown."""
    learned = {n: d for n, d in learn(model).items() if not isinstance(d, Decline)}
    if not learned:
        return model
    out = copy_model(model)
    values = {v.name: v for v in out.graph.value_info}
    for name, (dims, elem_type) in learned.items():
        value = values.get(name) or out.graph.value_info.add(name=name)
        value.type.tensor_type.elem_type = value.type.tensor_type.elem_type or elem_type
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d
    return out


def why_unknown(model: onnx.ModelProto, name: str) -> str | None:
    """Why ``name``'s shape is not learned from the batch (None where it is, or is known)."""
    found = learn(model, [name]).get(name)
    return found.reason if isinstance(found, Decline) else None
