"""The Python API: the same steps as the command line, usable from a notebook or a test."""

from __future__ import annotations

import os
from typing import Callable, Iterable

import numpy as np
import onnx

from .errors import BadInputError
from .graph import load_model
from .input_binding import bind_input_shapes, unsized_inputs
from .pipeline import check_model_legality, run_pipeline
from .report import Report
from .sparse.inputs import sparse_feeds
from .sparse.plan import BadSpec, parse_spec
from .target import Target, load_target
from .validate import check_in_memory, validate_model
from .verify import Tolerance, make_inputs, verify_end_to_end

ModelLike = "onnx.ModelProto | str | os.PathLike"


def _as_model(model) -> tuple[onnx.ModelProto, str]:
    """A ModelProto is checked like a loaded file (the checker and our own validation), so that
    the API raises ConvRewriteErrors only; it is read, never changed."""
    if isinstance(model, onnx.ModelProto):
        name = model.graph.name or "<model>"
        validate_model(model)
        check_in_memory(model, name)
        return model, name
    if not isinstance(model, (str, os.PathLike)):
        raise BadInputError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")
    return load_model(model), os.fspath(model)


def _feeds(model: onnx.ModelProto, inputs, seed: int, input_shapes,
           sparse_inputs=()) -> dict[str, np.ndarray]:
    if isinstance(inputs, dict):
        return inputs
    feeds = make_inputs(model, seed=seed, shapes=input_shapes, npz=inputs)
    if inputs is None:      # seeded: valid SparseConv coordinates, sparse --sparse-input tensors
        feeds = sparse_feeds(model, feeds, seed, sparse_inputs, fixed=set(input_shapes or {}))
    return feeds


def _samples(model: onnx.ModelProto, inputs, seed: int, input_shapes, sparse_inputs) -> dict:
    """The real values given (``inputs``: a dict or an .npz) of the tensors named sparse: the
    sparse regions are planned by their sites (``sparse.plan``); none for seeded inputs."""
    if inputs is None or not sparse_inputs:
        return {}
    feeds = _feeds(model, inputs, seed, input_shapes, sparse_inputs)
    names = []
    for text in sparse_inputs:
        try:
            names.append(parse_spec(text, feeds)[0])
        except BadSpec:
            pass                            # the rewrite says what is wrong
    return {name: feeds[name] for name in names if name in feeds}


def _describe_feeds(feeds: dict[str, np.ndarray]) -> dict:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()}


def rewrite(model, target, *, verify: bool = True, inputs=None, seed: int = 0,
            input_shapes: dict | None = None, tolerance: Tolerance | None = None,
            progress: Callable[[Iterable], Iterable] = iter,
            sparse_inputs: Iterable[str] = ()) -> tuple[onnx.ModelProto, Report]:
    """Make every conv fit ``target``; verify each rewrite and the whole model on onnxruntime.

    ``inputs``: a dict of arrays, a path to an .npz, or None for seeded random inputs.
    ``sparse_inputs``: names of tensors that are mostly zero, or masks; the convs reading them
    become sparse convs (see passes.dense_to_sparse). Returns the
    rewritten model (the original object itself when nothing needed rewriting) and the report;
    ``report.status`` is "ok", "mismatch" or "illegal".
    """
    original, name = _as_model(model)
    target = load_target(target)
    sparse_inputs = tuple(sparse_inputs or ())
    sized, bound = bind_input_shapes(original, input_shapes)
    rewritten, result = run_pipeline(
        sized, target, verify=verify, tolerance=tolerance_for(target, tolerance),
        feeds=lambda: _feeds(original, inputs, seed, input_shapes, sparse_inputs),
        progress=progress, sparse_inputs=sparse_inputs,
        sparse_samples=_samples(original, inputs, seed, input_shapes, sparse_inputs))
    if rewritten is sized:          # nothing rewritten: the caller's model, sizes and all
        rewritten = original
    result.notes[:0] = bound
    report = Report(model=name, target=target.name, records=result.records,
                    remaining=unsized_inputs(sized, target) + result.remaining,
                    convs_checked=result.convs_checked,
                    recognised=result.recognised, notes=result.notes,
                    end_to_end=result.end_to_end, timings=result.timings)
    if result.inputs is not None:
        report.inputs = _describe_feeds(result.inputs)
    return rewritten, report


def tolerance_for(target: Target, override: Tolerance | None) -> Tolerance:
    base = Tolerance(atol=target.verify.atol, rtol=target.verify.rtol)
    return base.merged(override) if override is not None else base


def check(model, target, *, input_shapes: dict | None = None) -> Report:
    """What ``target`` rejects in ``model``, rewriting nothing; ``input_shapes`` fixes symbolic
    sizes for the check as for ``rewrite``."""
    original, name = _as_model(model)
    target = load_target(target)
    sized, bound = bind_input_shapes(original, input_shapes, rewriting=False)
    result = check_model_legality(sized, target)
    return Report(model=name, target=target.name,
                  remaining=unsized_inputs(sized, target) + result.remaining,
                  convs_checked=result.convs_checked, mode="check", recognised=result.recognised,
                  notes=bound)


def verify(original, rewritten, *, inputs=None, seed: int = 0, input_shapes: dict | None = None,
           tolerance: Tolerance | None = None, kind: str = "reassociating") -> Report:
    """Compare two models end to end on onnxruntime (e.g. a model and its rewritten form).

    ``kind="reassociating"`` scales atol by the outputs' magnitude (sums may have been regrouped);
    ``kind="exact"`` applies the tolerances as given.
    """
    a, a_name = _as_model(original)
    b, b_name = _as_model(rewritten)
    feeds = _feeds(a, inputs, seed, input_shapes)
    report = Report(model=a_name, target=b_name, mode="verify", inputs=_describe_feeds(feeds))
    report.end_to_end = verify_end_to_end(a, b, feeds, tolerance or Tolerance(), kind)
    return report
