"""Fixing a model's symbolic input sizes from ``--input-shape`` before it is checked and rewritten.

A target's size rules (``input_height``/``input_width``, ``max_dim``) cannot be proven on a conv
whose map size is symbolic, so such a conv is reported, not passed. ``--input-shape`` says which
size the model will run at on the chip; binding it makes every size rule checkable and lets the
tiler cut what is too big. The batch axis (dim 0) stays symbolic: the size rules do not read it,
and a dynamic-batch model keeps its interface (the verification still runs at the given batch).
"""

from __future__ import annotations

import onnx

from .errors import BadInputError
from .graph import copy_model
from .record import Remaining
from .rules import Violation
from .target import Target


def bind_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None,
                      rewriting: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` with the symbolic non-batch dims of the named inputs set to the given sizes (a
    copy; the caller's model is untouched), and a note per bound input (``rewriting``: whether
    the model is then rewritten too, or only checked, as the note says). The model itself comes
    back when nothing is symbolic there. A rank or fixed size that disagrees is the user's error."""
    if not shapes:
        return model, []
    inputs = {i.name: i for i in model.graph.input}
    plans = {}
    for name, shape in shapes.items():
        info = inputs.get(name)
        if info is None or not info.type.HasField("tensor_type") \
                or not info.type.tensor_type.HasField("shape"):
            continue                    # make_inputs names the unknown input; no shape: nothing to bind
        dims = info.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise BadInputError(f"--input-shape {name}: {len(shape)} dims given, the model's input "
                                f"has {len(dims)}")
        bind = {}
        for axis, (dim, size) in enumerate(zip(dims, shape)):
            if dim.HasField("dim_value"):
                if dim.dim_value != size:
                    raise BadInputError(f"--input-shape {name}: dim {axis} is {dim.dim_value} in "
                                        f"the model, not {size}")
            elif axis > 0:
                bind[axis] = size
        if bind:
            plans[name] = bind
    if not plans:
        return model, []
    bound = copy_model(model)
    notes = []
    done = "checked and rewritten" if rewriting else "checked"
    for info in bound.graph.input:
        bind = plans.get(info.name)
        if not bind:
            continue
        dims = info.type.tensor_type.shape.dim
        was = [dims[a].dim_param or "?" for a in sorted(bind)]
        for axis, size in bind.items():
            dims[axis].Clear()
            dims[axis].dim_value = size
        notes.append(f"input {info.name}: symbolic dims {', '.join(was)} fixed to "
                     f"{', '.join(str(bind[a]) for a in sorted(bind))} by --input-shape "
                     f"({done} for that size)")
    _drop_stale_shapes(bound)
    return bound, notes


def _drop_stale_shapes(model: onnx.ModelProto) -> None:
    """Inner shapes recorded with the old symbols would contradict what inference now derives."""
    del model.graph.value_info[:]


SIZE_RULES = ("input_height", "input_width", "max_dim")


def unsized_inputs(model: onnx.ModelProto, target: Target) -> list[Remaining]:
    """The inputs whose symbolic map size keeps the target's size rules from being proven: a
    model that may run at any size is not "ok" on a chip that bounds sizes, whatever its convs
    look like at the size verification happens to use."""
    stated = [(name, getattr(target.conv, name)) for name in SIZE_RULES
              if getattr(target.conv, name) is not None]
    if not stated:
        return []
    initializers = {t.name for t in model.graph.initializer}
    found = []
    for info in model.graph.input:
        t = info.type.tensor_type if info.type.HasField("tensor_type") else None
        if info.name in initializers or t is None or not t.HasField("shape"):
            continue
        dims = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?")
                for d in t.shape.dim]
        symbolic = [dims[a] for a, d in enumerate(t.shape.dim)
                    if a > 0 and not d.HasField("dim_value")]
        if len(dims) < 3 or not symbolic:
            continue
        rule, limit = stated[0]
        message = (f"{', '.join(symbolic)} symbolic: the target's {', '.join(n for n, _ in stated)} "
                   f"cannot be proven on a size nobody fixed")
        found.append(Remaining(
            node=info.name, op="input", describe=f"input [{', '.join(dims)}]",
            violations=[Violation(rule, "unknown", limit, message)],
            reasons=[f"give --input-shape {info.name}:{'x'.join(dims)} with numbers for "
                     f"{', '.join(symbolic)} (the size the chip runs)"]))
    return found
