"""Loading, checking and saving models without losing anything.

Load maps every failure (missing file, not protobuf, failed checker) to a one-line BadInputError.
External data is checked before onnx reads it (relative, inside the model's folder, a regular file
long enough). Save writes atomically through outputs.py (model and external data as one unit), keeps
the original's opset imports, ir_version and metadata, and keeps external data for large models.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from google.protobuf.message import DecodeError, EncodeError
from onnx.external_data_helper import load_external_data_for_model
from onnx_graphsurgeon.logger import G_LOGGER

from .errors import BadInputError
from .outputs import copy_file, save_model_files, tensors_of

G_LOGGER.severity = G_LOGGER.ERROR      # gs's warnings (e.g. "colored is not installed") are noise
G_LOGGER.colors = False

PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = 1_800_000_000      # leave headroom below protobuf's 2 GB cap


def load_model(path: "str | os.PathLike") -> onnx.ModelProto:
    return load_model_files(path)[0]


def load_model_files(path: "str | os.PathLike") -> tuple[onnx.ModelProto, list[Path]]:
    """The model and every file it was read from (itself, then its external-data files), so the
    command line can refuse to write onto any of them."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if not path.is_file():
        raise BadInputError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, TypeError) as exc:
        raise BadInputError(f"{path}: not an ONNX model (cannot parse protobuf: "
                            f"{_first_line(exc)})") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read model: {_first_line(exc)}") from None
    try:
        _decode_strings(model)
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not an ONNX model (a name or string field is not UTF-8: "
                            f"{exc.reason} at byte {exc.start})") from None
    files = external_data_files(model, path)
    if files:
        try:
            load_external_data_for_model(model, str(_folder_of(path)))
        except Exception as exc:       # noqa: BLE001 - whatever onnx raises, it is the file
            raise BadInputError(f"{path}: cannot read its external data: "
                                f"{_first_line(exc)}") from None
    if not model.graph.node and not model.graph.output:
        raise BadInputError(f"{path}: not an ONNX model (no graph)")
    check_model(model, str(path), path)
    return model, [path, *files]


def _repeated(field) -> bool:
    """protobuf >= 5 has ``is_repeated`` (``label`` is gone from upb's descriptors)."""
    repeated = getattr(field, "is_repeated", None)
    return repeated if repeated is not None else field.label == field.LABEL_REPEATED


def _decode_strings(message) -> None:
    """Every string field is UTF-8: Python protobuf hands an invalid one back as bytes (or
    decodes lazily), and the UnicodeDecodeError came wherever a pass first used it (exit 4)."""
    for field, value in message.ListFields():
        items = value if _repeated(field) else [value]
        if field.type == field.TYPE_MESSAGE:
            for item in items:
                _decode_strings(item)
        elif field.type == field.TYPE_STRING:
            for item in items:          # proto2 hands invalid UTF-8 back as bytes
                if isinstance(item, bytes):
                    item.decode("utf-8")


def _folder_of(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def external_data_files(model: onnx.ModelProto, path: Path) -> list[Path]:
    """The external-data files ``model`` (read from ``path``, tensors not yet loaded) references,
    each checked the way onnx's loader does not: a location is relative, inside the model's folder,
    names an existing regular file, and that file holds every byte the tensor needs."""
    folder = _folder_of(path)
    root = os.path.realpath(folder)
    files: dict[str, Path] = {}
    for tensor in tensors_of(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        what = f"{path}: tensor {tensor.name!r}: external data"
        if not location:
            raise BadInputError(f"{what} has no location")
        if os.path.isabs(location) or location.startswith(("/", "\\")):
            raise BadInputError(f"{what} {location} is an absolute path; only files in the "
                                "model's folder are read")
        full = folder / location
        real = os.path.realpath(full)
        if os.path.commonpath([root, real]) != root:
            raise BadInputError(f"{what} {location} is outside the model's folder")
        if not full.exists():
            raise BadInputError(f"{what} file {location} not found (beside {path})")
        if not full.is_file():
            raise BadInputError(f"{what} {location} is not a file")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else tensor_nbytes(tensor)
        except ValueError:
            raise BadInputError(f"{what}: offset/length are not integers") from None
        if offset < 0 or (length is not None and length < 0):
            raise BadInputError(f"{what}: negative offset or length")
        size = full.stat().st_size
        if length is not None and offset + length > size:
            raise BadInputError(f"{what} {location} is too short ({size} bytes; the tensor needs "
                                f"bytes {offset} to {offset + length})")
        files.setdefault(real, full)
    return list(files.values())


def tensor_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes of a tensor's raw data (sub-byte types packed; None for strings and unknown types)."""
    count = math.prod(tensor.dims)      # not np.prod: 10x its cost on a few dims, per tensor of
    if tensor.data_type in _SUB_BYTE:   # every shape inference (0.23 s on the 1-D net's rounds)
        per_byte = _SUB_BYTE[tensor.data_type]
        return (count + per_byte - 1) // per_byte
    itemsize = _itemsize(tensor.data_type)
    return None if itemsize is None else itemsize * count


@functools.lru_cache(maxsize=None)
def _itemsize(data_type: int) -> int | None:
    """Bytes per element of an ONNX element type; None for strings and unknown types."""
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    except Exception:       # noqa: BLE001 - unknown or exotic element type
        return None
    return None if dtype.kind in "OSU" else dtype.itemsize


_SUB_BYTE = {getattr(onnx.TensorProto, n): per for n, per in
             (("INT4", 2), ("UINT4", 2), ("FLOAT4E2M1", 2), ("INT2", 4), ("UINT2", 4))
             if hasattr(onnx.TensorProto, n)}


def check_model(model: onnx.ModelProto, origin: str = "model",
                path: "Path | None" = None) -> None:
    """onnx's checker; a model too big for one protobuf is checked from its file (the checker
    reads external data there), or not at all when it has none."""
    check_tensor_sizes(model, origin)
    try:
        if not fits_in_protobuf(model):
            if path is not None:
                onnx.checker.check_model(str(path))
            return
        onnx.checker.check_model(for_checker(model))
    except onnx.checker.ValidationError as exc:
        raise BadInputError(f"{origin}: invalid ONNX model: {_first_line(exc)}") from None


def for_checker(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as onnx's checker judges it, without the bytes of its large weights: the
    checker serializes the whole model to hand it to C++ (ResNet-50: 0.75 s of a 2.7 s
    rewrite, all of it that copy), and of a tensor holding only raw_data of a byte-sized type
    it asks only that its type is defined and not STRING and that the data is long enough for
    its dims, which ``check_tensor_sizes`` has made sure of (exactly as long). Such a
    main-graph initializer becomes an empty tensor of the same name and type (dims [0]: no
    values wanted), which passes the same checks; any other tensor stays as it is, so every
    verdict and message is the checker's on the model itself (tests/test_checker_stand_ins)."""
    if not any(_checker_stand_in(t) for t in model.graph.initializer):
        return model
    light = onnx.ModelProto()
    _copy_fields(model, light, skip={"graph"})
    _copy_fields(model.graph, light.graph, skip={"initializer"})
    for t in model.graph.initializer:
        if _checker_stand_in(t):
            light.graph.initializer.add(name=t.name, data_type=t.data_type, dims=[0])
        else:
            light.graph.initializer.append(t)
    return light


_BYTE_SIZED = {getattr(onnx.TensorProto, n) for n in (
    "FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "INT8", "UINT8", "INT16", "UINT16", "INT32",
    "UINT32", "INT64", "UINT64", "BOOL")}


def _checker_stand_in(t: onnx.TensorProto) -> bool:
    """Whether the checker's verdict on ``t`` is known to be a pass (``for_checker``) and its
    bytes are worth not copying."""
    return (t.data_type in _BYTE_SIZED and t.data_location != onnx.TensorProto.EXTERNAL
            and not t.external_data and not t.HasField("segment")
            and not (t.float_data or t.int32_data or t.string_data or t.int64_data
                     or t.double_data or t.uint64_data)
            and len(t.raw_data) > LARGE_TENSOR_BYTES and all(d > 0 for d in t.dims)
            and len(t.raw_data) == tensor_nbytes(t))


def check_tensor_sizes(model: onnx.ModelProto, origin: str = "model") -> None:
    """Every initializer holds as many values as its dims say (onnx's checker does not look:
    a short raw_data reached numpy's reshape deep inside a pass, exit 4)."""
    for t in tensors_of(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        if any(d < 0 for d in t.dims):
            raise BadInputError(f"{origin}: tensor {t.name!r} has a negative dimension "
                                f"{list(t.dims)}")
        want = tensor_nbytes(t)
        if want is None:
            continue
        if t.raw_data:
            have = len(t.raw_data)
        elif t.data_type in _SUB_BYTE:
            continue
        else:
            field = _TYPED_FIELD.get(t.data_type)
            if field is None:
                continue
            count = len(getattr(t, field))
            if t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
                count //= 2
            have = count * (want // max(int(np.prod(t.dims, dtype=np.int64)), 1)) \
                if want else count
            if count == 0 and want == 0:
                continue
        if have != want:
            raise BadInputError(f"{origin}: tensor {t.name!r} holds {have} bytes of data, its "
                                f"shape {list(t.dims)} needs {want}")


_TYPED_FIELD = {
    onnx.TensorProto.FLOAT: "float_data", onnx.TensorProto.COMPLEX64: "float_data",
    onnx.TensorProto.DOUBLE: "double_data", onnx.TensorProto.COMPLEX128: "double_data",
    onnx.TensorProto.INT64: "int64_data", onnx.TensorProto.UINT64: "uint64_data",
    onnx.TensorProto.UINT32: "uint64_data",
    **{getattr(onnx.TensorProto, n): "int32_data" for n in
       ("INT32", "INT16", "INT8", "UINT16", "UINT8", "BOOL", "FLOAT16", "BFLOAT16")},
}


def fits_in_protobuf(model: onnx.ModelProto) -> bool:
    """Whether ``model`` serializes as one protobuf (onnx's in-memory checker, shape inference and
    onnxruntime's from-bytes sessions need that); tests lower PROTOBUF_LIMIT to take the big-model
    paths on small models. Decided from bounds on the size (``_size_bounds``), exactly where the
    bounds straddle the limit: sizing a whole model cost 5x sizing its parts (upb)."""
    try:
        low, high = _size_bounds(model, depth=2)
        if high < PROTOBUF_LIMIT or low >= PROTOBUF_LIMIT:
            return high < PROTOBUF_LIMIT
        return model.ByteSize() < PROTOBUF_LIMIT
    except EncodeError:             # Python protobuf cannot even size a message past 2 GB
        return False


# Per field on the wire, at most: a tag (field numbers below 2**29) and a length or a varint value.
_TAG_BYTES, _VARINT_BYTES = 5, 10


def _size_bounds(message, depth: int) -> tuple[int, int]:
    """Lower and upper bounds on ``message.ByteSize()``: the exact sizes of its parts ``depth``
    levels down, with what the wire format adds around each bounded from both sides."""
    low = high = 0
    for field, value in message.ListFields():
        items = value if _repeated(field) else [value]
        for item in items:
            if field.type == field.TYPE_MESSAGE:
                part = _size_bounds(item, depth - 1) if depth > 0 else (item.ByteSize(),) * 2
            elif field.type in (field.TYPE_STRING, field.TYPE_BYTES):
                size = len(item.encode("utf-8") if isinstance(item, str) else item)
                part = (size, size)
            else:
                part = (1, _VARINT_BYTES)
            low += part[0]
            high += part[1] + _TAG_BYTES + _VARINT_BYTES
    return low, high


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes for every tensor we can know (data_prop resolves Shape->Reshape chains).

    Inferred on a copy whose large weights are data-less stand-ins (``_without_large_tensors``:
    inference reads their dims and types only), their data put back afterwards: onnx's
    inference serializes the model and parses the result back, which for a model of 100 MB of
    weights cost more than the inference itself, and a model too big for one protobuf could
    not be inferred at all.
    """
    try:
        light, stubbed = _without_large_tensors(model)
        out = onnx.shape_inference.infer_shapes(light, data_prop=True)
        for i in stubbed:
            out.graph.initializer[i].CopyFrom(model.graph.initializer[i])
        return out
    except Exception:           # noqa: BLE001 - inference is best effort; shapes stay unknown
        return model


LARGE_TENSOR_BYTES = 1 << 16


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy. Python protobuf copies a message by serializing it, which fails past 2 GB
    ("Failed to serialize proto"), so a big model is copied field by field, each initializer on
    its own (one tensor stays under 2 GB)."""
    out = onnx.ModelProto()
    if fits_in_protobuf(model):
        out.CopyFrom(model)
        return out
    _copy_fields(model, out, skip={"graph"})
    _copy_fields(model.graph, out.graph, skip=set())
    return out


def _copy_fields(src, dst, skip: set[str]) -> None:
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if _repeated(field):
            target = getattr(dst, field.name)
            if field.type == field.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


# Element types whose values shape inference may read (shapes, axes, pads, repeats): kept whole.
_SHAPE_TYPES = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)


def _without_large_tensors(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[int]]:
    """A copy of the model with every large initializer a stand-in (``with_stand_ins``), and
    the positions of the stand-ins. Integer tensors of the types shapes are given in stay whole."""
    return with_stand_ins(model, large_tensor, STAND_IN_LOCATION)


STAND_IN_LOCATION = "stand-in.bin"


def large_tensor(tensor: onnx.TensorProto) -> bool:
    """Whether shape inference sees ``tensor`` as a data-less stand-in (its dims and element
    type alone decide)."""
    size = tensor_nbytes(tensor)
    return tensor.data_type not in _SHAPE_TYPES and size is not None and size > LARGE_TENSOR_BYTES


def with_stand_ins(model: onnx.ModelProto, chosen: Callable[[onnx.TensorProto], bool],
                   location: str) -> tuple[onnx.ModelProto, list[int]]:
    """A copy of the model with each main-graph initializer that ``chosen`` picks replaced by a
    data-less stand-in of the same name, type and dims, marked external at ``location`` (so
    nothing reads its values), and the positions of the stand-ins."""
    light = onnx.ModelProto()
    _copy_fields(model, light, skip={"graph"})
    _copy_fields(model.graph, light.graph, skip={"initializer"})
    stubbed = []
    for i, t in enumerate(model.graph.initializer):
        if not chosen(t):
            light.graph.initializer.append(t)
            continue
        stub = light.graph.initializer.add()
        stub.name, stub.data_type = t.name, t.data_type
        stub.dims.extend(t.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        stub.external_data.add(key="location", value=location)
        stubbed.append(i)
    return light, stubbed


def opset_version(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large initializers are data-less stand-ins: enough for shape inference."""
    return _without_large_tensors(model)[0]


def initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
               * int(np.prod(t.dims)) for t in model.graph.initializer)


def has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def file_uses_external_data(path: "str | os.PathLike") -> bool:
    """Whether the file on disk keeps tensors outside (loading inlines them, so ask the file)."""
    try:
        return has_external_data(onnx.load(str(path), load_external_data=False))
    except Exception:       # noqa: BLE001 - load_model has already said what is wrong
        return False


def save_model(model: onnx.ModelProto, path: "str | os.PathLike", *,
               external_data: bool | None = None,
               protected: "list[str | os.PathLike]" = ()) -> list[Path]:
    """Write atomically; external data goes to one fresh ``<name>.<digest>.data`` beside the model
    when the model is too big for one protobuf (or when asked), replaced with the model as one
    unit (outputs.save_model_files). Returns the files written. ``model`` is not modified (onnx's
    external-data save clears raw_data: a copy is saved then)."""
    if external_data is None:
        external_data = initializer_bytes(model) > EXTERNAL_THRESHOLD or \
            not fits_in_protobuf(model)
    return save_model_files(copy_model(model) if external_data else model, path,
                            external_data=external_data, protected=protected)


def copy_model_file(src: "str | os.PathLike", dst: "str | os.PathLike") -> None:
    """Byte-for-byte copy (the idempotent case), atomic like save_model."""
    copy_file(src, dst)
