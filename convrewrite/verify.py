"""Numerical equivalence on onnxruntime: per rewrite (original node vs its replacement) and end to end.

Inputs are seeded and symmetric ([-1, 1] for floats) or the user's own (.npz). Tolerances follow
onnxruntime's own tests per dtype, can be overridden by the target and the command line, and are
widened for rewrites that regroup sums ("reassociating": the error bound scales with the output's
magnitude, not with each element's). Every comparison reports the numbers Polygraphy would — max
abs / rel error, where, the smallest atol that would have passed — plus the worst channel.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import EncodeError

from .errors import BadInputError
from .exact_kernels import exact_integer_kernels
from . import graph, local_checks, memory, ort_weights
from .graph import copy_model, save_model
from .ops.reference import has_own_ops, standard_reference
from .ort_setup import ORT_ERRORS, session_options
from .ort_weights import Apart

DEFAULT_TOLERANCES = {          # onnxruntime's own test tolerances: (atol, rtol)
    "float32": (1e-5, 1e-4),
    "float64": (1e-7, 1e-6),
    "float16": (2.5e-3, 1e-3),
    "bfloat16": (2e-2, 1e-2),
}
# A rewrite may differ from the original by this many times the original's own noise floor (its
# outputs at onnxruntime's full vs disabled optimisation), on top of atol/rtol. Measured: a
# res2net-style net differs from itself by 5.0e-5 between the levels; its correct rewrite by 3.7e-5.
NOISE_MULTIPLE = 4.0
DEFAULT_DYNAMIC_DIM = 64        # a symbolic non-batch dimension without --input-shape
DEFAULT_BATCH = 1


@dataclass(frozen=True)
class Tolerance:
    atol: float | None = None   # None: the dtype's default
    rtol: float | None = None

    def __post_init__(self):
        for key in ("atol", "rtol"):
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                    or not np.isfinite(value) or value < 0:
                raise BadInputError(f"{key}: expected a finite non-negative number, got "
                                    f"{value!r} (NaN would make every comparison pass)")

    def resolve(self, dtype: np.dtype, kind: str) -> tuple[float, float]:
        """(atol, rtol) for outputs of this dtype and a rewrite of this tolerance kind."""
        if not np.issubdtype(dtype, np.floating):
            return 0.0, 0.0
        atol, rtol = DEFAULT_TOLERANCES.get(np.dtype(dtype).name, DEFAULT_TOLERANCES["float32"])
        return (atol if self.atol is None else self.atol,
                rtol if self.rtol is None else self.rtol)

    def merged(self, other: "Tolerance") -> "Tolerance":
        """``other`` wins where it says something."""
        return Tolerance(self.atol if other.atol is None else other.atol,
                         self.rtol if other.rtol is None else other.rtol)


# ---------------------------------------------------------------- sessions and inputs

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INTEGER_CONV_OPS = frozenset({"QLinearConv", "ConvInteger"})


def optimization_level(model: onnx.ModelProto) -> str:
    """``basic`` for quantized models (QDQ, or integer convs), else ``all``.

    With all optimisations onnxruntime replaces DQ→Conv→Q by its int8 kernels, which do not
    compute the model's ONNX semantics exactly (measured: a QDQ ResNet-50's logits move by 6.5 of
    469 between basic and all on this CPU). A rewrite that splits the conv changes which nodes it
    fuses, so comparing at that level would blame the rewrite for onnxruntime's own deviation.
    Basic optimisations keep the float semantics on both sides. A QLinearConv or ConvInteger
    model is run the same way: its split (``lowerings.integer_split``) holds QuantizeLinear
    nodes, so the original and the rewrite must be compared at one level, the one at which the
    ops run as written.
    """
    quantized = QDQ_OPS | INTEGER_CONV_OPS
    return "basic" if any(n.op_type in quantized for n in model.graph.node) else "all"


ORT_LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
ONNXRUNTIME, REFERENCE = "onnxruntime", "onnx.reference"


def session(model: "onnx.ModelProto | Apart", level: str | None = None) -> ort.InferenceSession:
    """A CPU session at ``level`` (default: ``optimization_level(model)``), its integer convs on
    kernels that compute them exactly (``exact_kernels``). ``model`` may be an ``Apart`` (its
    large weights already stand-ins, their arrays beside it: the local checks' merged model)."""
    given = {}
    if isinstance(model, Apart):
        model, given = model.model, model.arrays
    model = exact_integer_kernels(model)
    so = session_options()
    so.graph_optimization_level = ORT_LEVELS[level or optimization_level(model)]
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    light, names, arrays = _weights_apart(model, given)
    data = _serialized(light)
    if data is not None:
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
        if names:
            so.add_external_initializers(names, values)
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        sess._convrewrite_weights = (arrays, values)    # the session reads this memory
        return sess
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        save_model(Apart(model, given).whole(), path, external_data=True)
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _weights_apart(model: onnx.ModelProto, given: dict[str, np.ndarray] | None = None,
                   ) -> tuple[onnx.ModelProto, list[str], list[np.ndarray]]:
    """``model`` with its large main-graph weights as data-less stand-ins marked external, and
    those weights by name as arrays, for ``SessionOptions.add_external_initializers``
    (``ort_weights``: ResNet-50, 100 MB serialized per session before, 0.6 MB after); a
    stand-in already in ``model`` takes its array from ``given``. Only weights a main-graph node
    reads (``ort_weights.goes_apart``). A model with none of them is itself."""
    made = ort_weights.apart(model, given)
    return made.model, list(made.arrays), list(made.arrays.values())


def _serialized(model: onnx.ModelProto) -> bytes | None:
    """The model as one protobuf, or None past graph.PROTOBUF_LIMIT: serialized once (sizing it
    first costs as much as serializing it, 0.3 s for ResNet-50 on a loaded machine)."""
    try:
        data = model.SerializeToString()
    except (EncodeError, ValueError):   # past 2 GB
        return None
    return data if len(data) < graph.PROTOBUF_LIMIT else None


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def parse_input_shapes(items: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """``name:1x3x224x224`` (or ``name:1,3,224,224``) → {name: shape}."""
    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.replace(",", "x").split("x"))
            if any(d < 0 for d in shape):
                raise ValueError
        except ValueError:
            raise BadInputError(f"--input-shape {item!r}: expected NAME:DxDxD, e.g. "
                                "input:1x3x224x224") from None
        shapes[name] = shape
    return shapes


def make_inputs(model: onnx.ModelProto, *, seed: int = 0,
                shapes: dict[str, tuple[int, ...]] | None = None,
                npz: "str | os.PathLike | None" = None) -> dict[str, np.ndarray]:
    """Feeds for every graph input: from ``npz`` when given, else seeded random values."""
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    if npz is not None:
        return _load_npz(npz, inputs)
    shapes = shapes or {}
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise BadInputError(f"--input-shape names {unknown[0]!r}, which is not a model input "
                            f"(inputs: {', '.join(names)})")
    planned = {}
    for info in inputs:
        tensor_type = info.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        planned[info.name] = (shapes.get(info.name) or _default_shape(tensor_type.shape), dtype)
    memory.require(*_feeds_need(planned),
                   resizable=any(not d.HasField("dim_value") for i in inputs
                                 for d in i.type.tensor_type.shape.dim))
    rng = np.random.default_rng(seed)
    return {name: _random(rng, dtype, shape) for name, (shape, dtype) in planned.items()}


def _feeds_need(planned: dict[str, tuple[tuple[int, ...], np.dtype]]) -> tuple[int, str]:
    """Bytes the seeded feeds take, with the widest one's float64/int64 draw made before its cast
    (``_random``), and words naming the largest."""
    sizes = {name: memory.tensor_bytes(shape, dtype) for name, (shape, dtype) in planned.items()}
    draws = [memory.tensor_bytes(shape, np.float64) for shape, _ in planned.values()]
    if not sizes:
        return 0, "no inputs"
    name = max(sizes, key=sizes.get)
    shape, dtype = planned[name]
    return (sum(sizes.values()) + max(draws),
            f"seeded inputs; {name!r} {list(shape)} {np.dtype(dtype)} alone is "
            f"{memory.gib(sizes[name])}")


def _default_shape(shape: onnx.TensorShapeProto) -> tuple[int, ...]:
    dims = []
    for axis, d in enumerate(shape.dim):
        if d.HasField("dim_value") and d.dim_value >= 0:     # 0: an empty batch, as declared
            dims.append(d.dim_value)
        else:
            dims.append(DEFAULT_BATCH if axis == 0 else DEFAULT_DYNAMIC_DIM)
    return tuple(dims)


def _random(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo, hi = (int(info.min), int(info.max)) if info.bits <= 8 else (0, 10)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    raise BadInputError(f"cannot make random inputs of type {dtype}; give --inputs file.npz")


def _load_npz(path: "str | os.PathLike", inputs: list[onnx.ValueInfoProto]) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise BadInputError(f"{path}: no such file")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as exc:        # noqa: BLE001 - any failure means "not a usable npz"
        raise BadInputError(f"{path}: not a readable .npz file ({exc})") from None
    names = [i.name for i in inputs]
    missing = [n for n in names if n not in data]
    if missing:
        raise BadInputError(f"{path}: no array for model input {missing[0]!r} "
                            f"(arrays: {', '.join(sorted(data)) or 'none'})")
    extra = sorted(set(data) - set(names))
    if extra:
        raise BadInputError(f"{path}: array {extra[0]!r} is not a model input "
                            f"(inputs: {', '.join(names)})")
    for info in inputs:
        want = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
        if data[info.name].dtype != want:
            raise BadInputError(f"{path}: array {info.name!r} is {data[info.name].dtype}, "
                                f"the model wants {want}")
    return {n: data[n] for n in names}


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Reference:
    """The original model's outputs on the verification feeds, and the engine that computed them
    (which then runs every comparison): made once, reused by the end-to-end check."""

    engine: str
    outputs: dict[str, np.ndarray]
    # why the original did not run folded into the local checks' run where that was tried
    # (``verify_with_reference``): the failure's first line; None where it ran or was not tried
    fallback: str | None = None
    # the original model (standard_reference'd) and its weights read out as arrays, where the
    # checks' run made them (``local_checks.apart``): later sessions of it read them from there
    weights: "tuple[onnx.ModelProto, Apart] | None" = None

    def model(self, original: onnx.ModelProto) -> "onnx.ModelProto | Apart":
        """``original`` as a session takes it: its weights from ``weights`` where they are its."""
        return self.weights[1] if self.weights and self.weights[0] is original else original


def reference_run(original: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Reference:
    """The original on onnxruntime, or on onnx's reference evaluator where onnxruntime has no
    kernel for one of its ops (a float64 Conv). A model onnxruntime cannot load for another
    reason (an op of an unknown domain) cannot be verified: one line, exit 2, and --no-verify
    skips verification."""
    model = standard_reference(original)
    try:
        sess = session(model)
    except Exception as exc:        # noqa: BLE001 - onnxruntime raises its own exception types
        if "NOT_IMPLEMENTED" in str(exc) and _reference_runs(original):
            return Reference(REFERENCE, run(model, feeds, engine=REFERENCE))
        raise BadInputError("onnxruntime cannot run the model, so the rewrite cannot be "
                            f"verified (--no-verify skips verification): {_first(exc)}") from None
    return Reference(ONNXRUNTIME, _run_session(sess, feeds))


def _reference_runs(model: onnx.ModelProto) -> bool:
    from onnx.reference import ReferenceEvaluator
    try:
        ReferenceEvaluator(standard_reference(model))
    except Exception:               # noqa: BLE001 - any failure: the evaluator lacks an op
        return False
    return True


def _reference_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator
    wanted = [o.name for o in model.graph.output]
    try:
        values = ReferenceEvaluator(model).run(wanted, _fed(model, feeds))
    except Exception as exc:        # noqa: BLE001 - the evaluator raises many types
        raise BadInputError(f"onnx's reference evaluator failed to run the model: "
                            f"{_first(exc)}") from None
    return dict(zip(wanted, (np.asarray(v) for v in values)))


def run(model: "onnx.ModelProto | Apart", feeds: dict[str, np.ndarray],
        extra_outputs: Iterable[str] = (), engine: str = ONNXRUNTIME,
        level: str | None = None) -> dict[str, np.ndarray]:
    """Run on onnxruntime CPU (at ``level``) or onnx's reference evaluator; ``extra_outputs``
    exposes intermediate tensors by name. ``model`` may be an ``Apart``."""
    apart = model if isinstance(model, Apart) else Apart(model)
    extra = [n for n in dict.fromkeys(extra_outputs)
             if n not in {o.name for o in apart.model.graph.output} and n not in feeds]
    if extra:
        apart = Apart(_with_outputs(apart.model, extra), apart.arrays)
    if engine == REFERENCE:
        out = _reference_run(apart.whole(), feeds)
        out.update({k: v for k, v in feeds.items() if k in extra_outputs})
        return out
    out = _run_session(session(apart if apart.arrays else apart.model, level), feeds)
    out.update({k: v for k, v in feeds.items() if k in extra_outputs})
    return out


def _run_session(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    wanted = [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(wanted, feeds)
    except Exception as exc:        # noqa: BLE001 - onnxruntime raises its own exception types
        raise BadInputError(f"onnxruntime failed to run the model: {_first(exc)}") from None
    return dict(zip(wanted, values))


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    copy = copy_model(model)            # field by field past 2 GB

    typed = {v.name: v for v in copy.graph.value_info}
    for name in names:
        info = onnx.ValueInfoProto()
        info.CopyFrom(typed.get(name, onnx.ValueInfoProto(name=name)))
        copy.graph.output.append(info)
    return copy


# ---------------------------------------------------------------- comparison

def compare(reference: np.ndarray, actual: np.ndarray, atol: float, rtol: float,
            scale_atol: bool = False, noise: float = 0.0) -> dict:
    """Polygraphy-style statistics; ``scale_atol`` multiplies atol by max(1, max|reference|);
    ``noise`` (an absolute allowance: a multiple of the original model's own noise floor) is
    added to every element's bound. Equal infinities and NaN on both sides at the same place
    are equal; anything else non-finite is a mismatch."""
    ref = np.asarray(reference)
    got = np.asarray(actual)
    if ref.shape != got.shape:
        return {"passed": False, "error": f"shape {list(got.shape)} != reference "
                                          f"{list(ref.shape)}"}
    if scale_atol and ref.size:
        atol = atol * max(1.0, float(_magnitude(ref.astype(np.float64)).max()))
    # Most rewrites are bit-exact, and an empty batch has nothing to differ: every difference is
    # then 0, the worst at the first element, and none of the element-wise work is done.
    same = ref.size == 0 or _bit_exact(ref, got)
    found = _Differences() if same else _differences(ref, got, atol, rtol, noise)
    worst = found.worst if found.worst is not None else (0,) * ref.ndim
    stats = {
        "passed": found.mismatches == 0,
        "bit_exact": found.bit_exact,
        "max_abs": found.max_abs,
        "max_rel": found.max_rel,
        "p99_abs": found.p99_abs,
        "worst_index": [int(i) for i in worst],
        "reference_at_worst": float(ref[worst].astype(np.float64)) if ref.size else None,
        "actual_at_worst": float(got[worst].astype(np.float64)) if ref.size else None,
        "mismatches": found.mismatches,
        "elements": int(ref.size),
        "atol": atol,
        "rtol": rtol,
        "noise_allowance": noise,
        "min_atol_to_pass": found.min_atol_to_pass,
    }
    if ref.ndim >= 3 and ref.size:      # conv-shaped: which output channel is worst
        stats["worst_channel"] = found.worst_channel
        stats["worst_channel_max_abs"] = found.worst_channel_max_abs
    return stats


class _Differences(NamedTuple):
    """What ``compare`` measures between two arrays of one shape; the defaults are what it finds
    where nothing differs."""

    mismatches: int = 0
    bit_exact: bool = True
    max_abs: float = 0.0
    max_rel: float = 0.0
    p99_abs: float = 0.0
    worst: tuple[int, ...] | None = None    # the largest difference's index (None: the first)
    min_atol_to_pass: float = 0.0
    worst_channel: int = 0
    worst_channel_max_abs: float = 0.0


def _magnitude(r: np.ndarray) -> np.ndarray:
    """|r| with every non-finite element 0 (float64 ``r``): what tolerances scale with."""
    return np.abs(np.where(np.isfinite(r), r, 0.0))


def _differences(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float,
                 noise: float) -> _Differences:
    """The element-wise differences of two arrays that are not bit-exact, ``atol`` scaled.
    Worked in float64 in three buffers reused in place (each fresh temporary of the plain
    formulas cost a first touch of its pages: 12 records of 1.1M elements on the 1-D net took
    1.1 CPU-s), flat (numpy gives a 0-d array's results as scalars); every value is the plain
    formulas' (tests/test_verify_speed_paths)."""
    r, g = ref.astype(np.float64).reshape(-1), got.astype(np.float64).reshape(-1)
    same = r == g
    same |= np.isnan(r) & np.isnan(g)                   # Inf == Inf of the same sign
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.subtract(g, r)
    np.abs(diff, out=diff)
    np.copyto(diff, 0.0, where=same)
    np.copyto(diff, np.inf, where=np.isnan(diff))
    mag = np.abs(r, out=r)                              # _magnitude(ref), in r's buffer
    np.copyto(mag, 0.0, where=~np.isfinite(mag))
    work = np.multiply(mag, rtol, out=g)                # rtol * mag, in g's buffer
    bound = np.add(work, atol, out=work)
    bad = diff > np.add(bound, noise, out=bound)
    mismatches = int(bad.sum())
    del bad
    rel = np.maximum(mag, np.finfo(np.float64).tiny, out=work)
    np.divide(diff, rel, out=rel)
    np.copyto(rel, 0.0, where=diff == 0)
    max_rel = float(rel.max())
    p99 = float(np.percentile(np.minimum(diff, np.finfo(np.float64).max, out=rel), 99,
                              overwrite_input=True))
    slack = np.subtract(diff, np.multiply(mag, rtol, out=rel), out=rel)
    slack -= noise
    found = _Differences(
        mismatches=mismatches,
        bit_exact=False if ref.dtype == got.dtype else      # else _bit_exact had said so
        bool(np.array_equal(ref, got, equal_nan=True)),
        max_abs=float(diff.max()),
        max_rel=max_rel,
        p99_abs=p99,
        worst=np.unravel_index(int(np.argmax(diff)), ref.shape),
        min_atol_to_pass=float(np.maximum(slack, 0.0, out=slack).max()))
    if ref.ndim >= 3:
        per_channel = diff.reshape(ref.shape[0], ref.shape[1], -1).max(axis=(0, 2))
        found = found._replace(worst_channel=int(np.argmax(per_channel)),
                               worst_channel_max_abs=float(per_channel.max()))
    return found


def _bit_exact(ref: np.ndarray, got: np.ndarray) -> bool:
    """Equal in dtype and value, NaN equal to NaN. The same bytes say so fast (most records: 547
    of them took 0.57 s in numpy's array_equal on the 1-D net at 40,000 samples); only arrays
    whose bytes differ (-0 against 0, another NaN payload, a real difference) are compared value
    by value."""
    if ref.dtype != got.dtype:
        return False
    if ref.shape == got.shape and _same_bytes(ref, got):
        return True
    return np.array_equal(ref, got, equal_nan=ref.dtype.kind in "fc")


_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _same_bytes(ref: np.ndarray, got: np.ndarray) -> bool:
    """Whether two arrays of one dtype and shape hold the same bytes: compared as unsigned words
    of the item's size where both are contiguous (no copy: tobytes copied both, 1.7 of 37 s of a
    verified 1-D net at 70,000 samples with 916 records, measured), else through tobytes."""
    word = _WORDS.get(ref.dtype.itemsize)
    if word is not None and ref.flags.c_contiguous and got.flags.c_contiguous:
        return bool((ref.view(word) == got.view(word)).all())
    return ref.tobytes() == got.tobytes()


def compare_outputs(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray],
                    names: list[str], tolerance: Tolerance, kind: str,
                    floors: dict[str, float] | None = None) -> dict:
    """Compare named outputs; the overall verdict is the worst of them. ``floors``: each
    output's noise floor (``noise_floor``), of which NOISE_MULTIPLE is allowed on top."""
    per_output = {}
    for name in names:
        ref = reference[name]
        atol, rtol = tolerance.resolve(ref.dtype, kind)
        noise = NOISE_MULTIPLE * (floors or {}).get(name, 0.0)
        per_output[name] = compare(ref, actual[name], atol, rtol,
                                   scale_atol=kind == "reassociating", noise=noise)
    passed = all(s["passed"] for s in per_output.values())
    worst = max(per_output, key=lambda n: per_output[n].get("max_abs", float("inf")),
                default=None)
    summary = dict(per_output[worst]) if worst is not None else {"passed": True}
    summary.update(passed=passed, tolerance=kind, worst_output=worst, outputs=per_output)
    return summary


# ---------------------------------------------------------------- local (per rewrite) checks

def extract(model: onnx.ModelProto, input_name: "str | list[str]", output_name: "str | list[str]",
            example: "np.ndarray | dict[str, np.ndarray]") -> onnx.ModelProto:
    """The part of ``model`` that computes ``output_name`` (one or several) from ``input_name``
    (one, or several with ``example`` a dict of arrays by name) and constants."""
    outputs = [output_name] if isinstance(output_name, str) else list(output_name)
    input_names = [input_name] if isinstance(input_name, str) else list(input_name)
    examples = example if isinstance(example, dict) else {input_names[0]: example}
    producers = {o: n for n in model.graph.node for o in n.output}
    initializers = {t.name: t for t in model.graph.initializer}
    keep, stack, seen = [], list(outputs), set()
    while stack:
        name = stack.pop()
        if name in seen or name in input_names or name in initializers or not name:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is None:
            raise BadInputError(f"cannot isolate {outputs[0]!r}: it depends on {name!r}, which is "
                                f"neither {' nor '.join(map(repr, input_names))} nor a constant")
        if id(node) not in {id(k) for k in keep}:
            keep.append(node)
            stack.extend(node.input)
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    keep.sort(key=lambda n: order[id(n)])
    used = {i for n in keep for i in n.input}
    graph = onnx.helper.make_graph(
        keep, "local",
        [onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(examples[name].dtype), examples[name].shape)
         for name in input_names],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        [initializers[n] for n in sorted(used) if n in initializers])
    local = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    local.ir_version = model.ir_version
    return local


def verify_records(records, rewritten: onnx.ModelProto, feeds: dict[str, np.ndarray],
                   tolerance: Tolerance, progress: Callable[[Iterable], Iterable] = iter,
                   engine: str = ONNXRUNTIME) -> dict[str, np.ndarray]:
    """Fill ``record.verify`` for each record: its original node vs its replacement, fed with the
    activation that reaches it in the rewritten model. Every record's original sits beside the
    rewritten graph in one model (``local_checks``), so one run checks them all (a record whose
    original cannot be merged is checked on two models of its own, fed from that run). Returns
    the run's values, the rewritten model's outputs among them."""
    return _check(records, rewritten, feeds, tolerance, progress, engine)[0]


def verify_with_reference(original: onnx.ModelProto, records, rewritten: onnx.ModelProto,
                          feeds: dict[str, np.ndarray], tolerance: Tolerance,
                          progress: Callable[[Iterable], Iterable] = iter,
                          tidied: onnx.ModelProto | None = None,
                          ) -> tuple[Reference, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``reference_run(original)`` and ``verify_records`` in one onnxruntime run where they can
    share it: the original model sits in the merged graph too (its weights read once by it and
    the records' originals), at the level it runs at alone. Else (another level, a model or no
    record that merges) the two as they are, separately; and so again where the one run fails
    (``FOLD_FAILURES``: onnxruntime has no kernel for an op, so the original runs on onnx's
    reference evaluator, say), which ``Reference.fallback`` then tells, and each record's
    ``verify`` names the engine its check ran on. Any other error is raised. ``tidied``: the
    model the end-to-end check will compare (``rewritten`` after the tidy passes), folded into
    the same run where it merges at the same level (its weights equal to ``rewritten``'s read
    from there), so that check needs no session of its own; its outputs are the third value,
    empty where it was not run."""
    model = standard_reference(original)
    befores = local_checks.originals(records)
    level = optimization_level(model)
    fallback = None
    if records and local_checks.foldable(model, rewritten) and level == optimization_level(
            rewritten) and all(optimization_level(b) == level for b in befores) and \
            any(local_checks.mergeable(b, rewritten) for b in befores):
        fold = standard_reference(tidied) if tidied is not None else None
        if fold is not None and not (local_checks.foldable(fold, rewritten)
                                     and optimization_level(fold) == level):
            fold = None
        try:
            source = local_checks.apart(model)
            outputs, reference, also = _check(records, rewritten, feeds, tolerance, progress,
                                              ONNXRUNTIME, source, befores, fold)
            return Reference(ONNXRUNTIME, reference, weights=(model, source)), outputs, also
        except FOLD_FAILURES as exc:    # said again, or run, by the separate path
            fallback = _first(exc)
    reference = reference_run(original, feeds)
    outputs = verify_records(records, rewritten, feeds, tolerance, progress, reference.engine)
    if fallback is not None:
        reference.fallback = fallback
        for record in records:
            if record.verify is not None:
                record.verify["engine"] = reference.engine
    return reference, outputs, {}


# What the one run of the original with the local checks may fail with, the separate runs then
# saying it again or running: onnxruntime refusing the merged model (its own exception types:
# a kernel it lacks, a graph it rejects) or failing to run it, a piece that does not isolate
# (BadInputError, the one-line errors of ``run`` and ``local_checks``).
FOLD_FAILURES = (BadInputError, *ORT_ERRORS)


def _check(records, rewritten: onnx.ModelProto, feeds: dict[str, np.ndarray],
           tolerance: Tolerance, progress: Callable[[Iterable], Iterable], engine: str,
           original: "onnx.ModelProto | Apart | None" = None, befores: list | None = None,
           tidied: onnx.ModelProto | None = None,
           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``verify_records``' work; with ``original`` (and ``tidied``), its outputs from the first
    run as well."""
    befores = befores if befores is not None else local_checks.originals(records)
    alone = [i for i, b in enumerate(befores) if not local_checks.mergeable(b, rewritten)]
    together = [i for i in range(len(records)) if i not in set(alone)]
    reads = [n for i in alone for n in (records[i].input_name, *records[i].more_inputs)]
    producers = local_checks.Producers(rewritten)
    originals: dict[int, dict[str, np.ndarray]] = {}
    values: dict[str, np.ndarray] = {}
    reference: dict[str, np.ndarray] = {}
    also: dict[str, np.ndarray] = {}
    groups = local_checks.chunks([befores[i] for i in together]) if together else []
    if original is not None and not groups:
        raise ValueError("nothing to fold the original into")
    base = local_checks.apart(rewritten) if groups else None    # its weights read out once
    for group in groups:
        chosen = [together[k] for k in group]
        merged = local_checks.merge(base, [records[i] for i in chosen],
                                    [befores[i] for i in chosen], producers, original, tidied)
        values = {**values, **run(merged.apart, feeds, extra_outputs=reads, engine=engine)}
        if tidied is not None and optimization_level(merged.model) == optimization_level(tidied):
            also = {o: values[n] for o, n in merged.tidied.items()}
        reads, original, tidied = [], None, None
        reference = reference or {o: values[n] for o, n in merged.reference.items()}
        for k, i in enumerate(chosen):
            names = [records[i].output_name, *records[i].more_outputs]
            originals[i] = dict(zip(names, (values[n] for n in merged.originals[k])))
    if reads:                   # nothing merged: the activations the lone checks read
        values = run(rewritten, feeds, extra_outputs=reads, engine=engine)
    for i, record in enumerate(progress(records)):
        if i in originals:
            record.verify = _worst(record, originals[i], values, tolerance)
        else:
            _verify_alone(record, befores[i], rewritten, values, tolerance, engine)
    return (_own_outputs(rewritten, values, merged.model if together else rewritten), reference,
            also)


def _own_outputs(rewritten: onnx.ModelProto, values: dict[str, np.ndarray],
                 ran: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The rewritten model's outputs from the run that fed the checks, when that run is the one
    the end-to-end check would make (the same onnxruntime level, no op of our domain to
    replace); else nothing."""
    names = [o.name for o in rewritten.graph.output]
    if has_own_ops(rewritten) or optimization_level(ran) != optimization_level(rewritten) \
            or any(n not in values for n in names):
        return {}
    return {n: values[n] for n in names}


def _verify_alone(record, before: onnx.ModelProto, rewritten: onnx.ModelProto,
                  activations: dict[str, np.ndarray], tolerance: Tolerance, engine: str) -> None:
    """One record on two models of its own (its original cannot sit in the rewritten graph)."""
    xs = {n: activations[n] for n in (record.input_name, *record.more_inputs)}
    for name, x in xs.items():
        before = _retype_input(before, name, x)
    names = [record.output_name, *record.more_outputs]
    after = extract(rewritten, list(xs), names, xs)
    ref = run(before, _fed(before, xs), engine=engine)
    got = run(after, _fed(after, xs), engine=engine)
    record.verify = _worst(record, ref, got, tolerance)


def _worst(record, ref: dict[str, np.ndarray], got: dict[str, np.ndarray],
           tolerance: Tolerance) -> dict:
    """The record's verdict: the worst of its outputs (a failure first, then the largest error)."""
    names = [record.output_name, *record.more_outputs]
    stats = [compare(ref[n], got[n], *tolerance.resolve(ref[n].dtype, record.tolerance),
                     scale_atol=record.tolerance == "reassociating") for n in names]
    return max(stats, key=lambda s: (not s["passed"], s.get("max_abs", 0.0)))


def _fed(model: onnx.ModelProto, xs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays the model reads (a region's original may not read all its replacement reads:
    a dense conv ignores the mask its sparse form gathers with)."""
    wanted = {i.name for i in graph_inputs(model)}
    return {n: x for n, x in xs.items() if n in wanted}


def _retype_input(model: onnx.ModelProto, name: str, example: np.ndarray) -> onnx.ModelProto:
    for info in model.graph.input:
        if info.name == name:
            info.CopyFrom(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(example.dtype), example.shape))
    return model


def noise_floor(original: "onnx.ModelProto | Apart", feeds: dict[str, np.ndarray],
                reference: dict[str, np.ndarray], names: list[str]) -> dict[str, float]:
    """The original model's own noise: per output, the largest difference between onnxruntime
    with all its graph optimisations (``reference``, the run the comparison uses anyway) and with
    none (one more session). A rewrite whose error stays within a few times this is as faithful as
    the runtime itself is to the model; a non-finite difference gives no allowance."""
    plain = run(original, feeds, level="disable")
    floors = {}
    for name in names:
        stats = compare(reference[name], plain[name], 0.0, 0.0)
        max_abs = stats.get("max_abs", 0.0)
        floors[name] = max_abs if np.isfinite(max_abs) and np.issubdtype(
            reference[name].dtype, np.floating) else 0.0
    return floors


def default_load_error(model: onnx.ModelProto) -> str | None:
    """Why onnxruntime refuses ``model`` with all its graph optimisations (how a user loads it),
    None when it loads. The comparisons may never load the rewritten model alone at that level:
    the local checks run it merged with the originals, and a quantized model is compared at the
    basic level. A fusion of onnxruntime's can still reject it (1.32's PadFusion folded a Pad
    feeding a Conv's weight into the conv's pads: "... is not a graph input"), and a model the
    user cannot load has not been proven equal to anything."""
    try:
        session(model, "all")
    except ORT_ERRORS as exc:
        return _first(exc)
    return None


def verify_end_to_end(original: onnx.ModelProto, rewritten: onnx.ModelProto,
                      feeds: dict[str, np.ndarray], tolerance: Tolerance, kind: str,
                      reference: Reference | None = None, floor: bool = True,
                      outputs: dict[str, np.ndarray] | None = None) -> dict:
    """Our domain's ops on either side run as their literal standard-ONNX definitions.
    ``reference``: the original's run (``reference_run``; made here when not given). With
    ``floor`` (and onnxruntime), the original's noise floor is measured (one more session) and
    NOISE_MULTIPLE of it allowed on top of atol/rtol; the report carries it next to the error.
    ``outputs``: the rewritten model's outputs on ``feeds`` by the reference's engine, when a
    run already made them (``verify_records``'), else one run here. Either way the rewritten model
    must load as shipped (``default_load_error``)."""
    reference = reference or reference_run(original, feeds)
    engine, ref = reference.engine, reference.outputs
    original = standard_reference(original)
    got = outputs or run(standard_reference(rewritten), feeds, engine=engine)
    names = [o.name for o in original.graph.output]
    missing = [n for n in names if n not in got]
    if missing:
        return {"passed": False, "error": f"rewritten model lacks output {missing[0]!r}"}
    floors = noise_floor(reference.model(original), feeds, ref, names) \
        if floor and engine == ONNXRUNTIME else {}
    stats = compare_outputs(ref, got, names, tolerance, kind, floors)
    ran_as_shipped = outputs is None and optimization_level(rewritten) == "all"
    refused = None if engine != ONNXRUNTIME or ran_as_shipped else default_load_error(
        standard_reference(rewritten))
    if refused is not None:
        stats.update(passed=False, error="onnxruntime refuses the rewritten model with its "
                     f"default graph optimisations: {refused}")
    stats["onnxruntime_optimization"] = optimization_level(original)
    stats["engine"] = engine
    stats["noise_floor"] = max(floors.values(), default=0.0) if floors else None
    stats["noise_multiple"] = NOISE_MULTIPLE
    return stats
