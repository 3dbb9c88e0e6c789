"""Weights handed to onnxruntime as arrays beside the protobuf, not serialized in it.

``verify.session`` gives onnxruntime each large weight a main-graph node reads as an array
(``SessionOptions.add_external_initializers``) in place of a data-less stand-in: onnxruntime
puts the very bytes in place of the stand-in before it optimises the graph, so the session
computes what it would from the whole protobuf. An ``Apart`` is such a model made once: the local
checks' merged model is built from the stand-ins of the models it holds (no weight copied into
it), and the original's weights, read by the checks' run and by the noise floor's session, are
read out of its protobuf once (ResNet-50 at c256: 0.4 GB of weight bytes copied per verified
rewrite before, about half after).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from . import graph

# Element types handed to onnxruntime as arrays; the integer types shapes are given in stay in the
# protobuf, as shape inference may read their values.
APART_TYPES = {getattr(onnx.TensorProto, k): np.dtype(v) for k, v in (
    ("FLOAT", "float32"), ("DOUBLE", "float64"), ("FLOAT16", "float16"), ("INT8", "int8"),
    ("UINT8", "uint8"), ("INT16", "int16"), ("UINT16", "uint16"), ("UINT32", "uint32"),
    ("UINT64", "uint64"))}
APART_BYTES = 1 << 16
LOCATION = "in-memory.bin"


@dataclass
class Apart:
    """A model whose large read weights are data-less stand-ins (external at ``LOCATION``), and
    those weights' values by name."""

    model: onnx.ModelProto
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def whole(self) -> onnx.ModelProto:
        """The model with every stand-in's values in it again (for onnx's reference evaluator)."""
        if not self.arrays:
            return self.model
        full = onnx.ModelProto()
        full.CopyFrom(self.model)
        for t in full.graph.initializer:
            if t.name in self.arrays and is_stand_in(t):
                del t.external_data[:]
                t.ClearField("data_location")
                t.raw_data = np.ascontiguousarray(self.arrays[t.name]).astype(
                    APART_TYPES[t.data_type].newbyteorder("<"), copy=False).tobytes()
        return full


def read_names(model: onnx.ModelProto) -> set[str]:
    return {name for node in model.graph.node for name in node.input}


def goes_apart(t: onnx.TensorProto, read: set[str]) -> bool:
    """Whether ``t`` is handed over as an array: a large weight of a plain type with raw data
    that a main-graph node reads (onnxruntime drops an unread initializer when it loads the graph,
    and then refuses to replace it)."""
    return (t.name in read and t.data_type in APART_TYPES
            and t.data_location != onnx.TensorProto.EXTERNAL and t.HasField("raw_data")
            and int(np.prod(t.dims, dtype=np.int64)) * APART_TYPES[t.data_type].itemsize
            > APART_BYTES)


def is_stand_in(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data and any(
        e.key == "location" and e.value == LOCATION for e in t.external_data)


def array_of(t: onnx.TensorProto) -> np.ndarray:
    """``t``'s raw data as an array (one copy, the bytes protobuf hands out)."""
    return np.frombuffer(t.raw_data, dtype=APART_TYPES[t.data_type].newbyteorder("<")) \
        .reshape(tuple(t.dims))


def stand_in(t: onnx.TensorProto, name: str) -> onnx.TensorProto:
    """A data-less tensor of ``t``'s type and dims, named ``name``, marked external."""
    stub = onnx.TensorProto(name=name, data_type=t.data_type, dims=t.dims,
                            data_location=onnx.TensorProto.EXTERNAL)
    stub.external_data.add(key="location", value=LOCATION)
    return stub


def apart(model: onnx.ModelProto, given: dict[str, np.ndarray] | None = None,
          keep=lambda t: False) -> Apart:
    """``model`` with each weight that ``goes_apart`` as a stand-in; a stand-in already in it
    that a node reads takes its array from ``given`` (the values it stands for). ``keep``: weights
    left in the protobuf whatever their size. A model with none is itself."""
    read = read_names(model)
    given = given or {}

    def chosen(t: onnx.TensorProto) -> bool:
        if t.name in read and t.name in given and is_stand_in(t):
            return True
        return goes_apart(t, read) and not keep(t)
    if not any(chosen(t) for t in model.graph.initializer):
        return Apart(model)
    light, positions = graph.with_stand_ins(model, chosen, LOCATION)
    tensors = [model.graph.initializer[i] for i in positions]
    return Apart(light, {t.name: given[t.name] if is_stand_in(t) else array_of(t)
                         for t in tensors})


def same_values(t: onnx.TensorProto, source: onnx.TensorProto,
                array: np.ndarray | None) -> bool:
    """Whether ``t`` holds the values of ``source`` (``array``: its values where ``source`` is a
    stand-in): the same type, dims and bytes."""
    if t.data_type != source.data_type or list(t.dims) != list(source.dims) or \
            t.data_location:
        return False
    if array is not None:
        if not t.raw_data or t.data_type not in APART_TYPES:
            return False
        want = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        return np.array_equal(np.frombuffer(t.raw_data, dtype=np.uint8), want)
    if source.data_location:
        return False
    if t.raw_data and source.raw_data:
        return t.raw_data == source.raw_data
    return t.SerializeToString() == source.SerializeToString()
