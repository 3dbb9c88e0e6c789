"""Older models: up-conversion to an opset our emitters write, and IR < 4's rule that every
initializer is also a graph input.

The lowerings emit Slice with inputs (opset 10) and Pad with inputs (11), and Split/Unsqueeze in
their attribute (11, 12) or input (13+) form; rather than carry attribute forms of Slice and Pad
for opsets 7-10, a model below ``MIN_REWRITE_OPSET`` is rewritten as its up-converted form
(onnx.version_converter) and the report says so. A model nothing needs rewriting in comes back
as it was, at its own opset.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from .graph import opset_version

MIN_REWRITE_OPSET = 11


def for_rewriting(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """``model`` at an opset the emitters write, and a note when it had to be up-converted
    (``None`` when it did not, or when onnx cannot convert it: the rewrite then keeps the
    model's own opset and the note says why)."""
    work, note = _upgraded(model)
    return _ir4(work), note


def _ir4(model: onnx.ModelProto) -> onnx.ModelProto:
    """IR < 4 lists initializers as graph inputs, which makes them overridable inputs to shape
    inference (a weight slice of unknown value, wrong shapes after a rewrite): the passes work on
    an IR-4 copy where initializers are constants only; ``restore`` puts the IR back."""
    if model.ir_version >= 4:
        return model
    work = onnx.ModelProto()
    work.CopyFrom(model)
    work.ir_version = 4
    inits = {t.name for t in work.graph.initializer}
    kept = [i for i in work.graph.input if i.name not in inits]
    del work.graph.input[:]
    work.graph.input.extend(kept)
    return work


def restore(rewritten: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """The rewritten model at the original's IR version, with IR < 4's listing rule kept."""
    if original.ir_version < 4:
        rewritten.ir_version = original.ir_version
    return list_initializers_as_inputs(rewritten)


def _upgraded(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    opset = opset_version(model)
    if opset >= MIN_REWRITE_OPSET or not model.graph.node:
        return model, None
    try:
        converted = version_converter.convert_version(model, MIN_REWRITE_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:    # noqa: BLE001 - the converter raises many types; keep the opset
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return model, (f"opset {opset} kept: onnx's version converter cannot take this model "
                       f"to {MIN_REWRITE_OPSET} ({first})")
    converted.ir_version = max(model.ir_version, converted.ir_version)
    return converted, (f"the model was up-converted from opset {opset} to {MIN_REWRITE_OPSET} "
                       "(onnx.version_converter) to rewrite it; the output is at opset "
                       f"{MIN_REWRITE_OPSET}")


def list_initializers_as_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """IR < 4 requires every initializer to be a graph input too (onnx.checker rejects one that
    is not); the ones a rewrite added are appended, typed from the tensor."""
    if model.ir_version >= 4:
        return model
    listed = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        if t.name not in listed:
            model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type,
                                                                        list(t.dims)))
            listed.add(t.name)
    return model
