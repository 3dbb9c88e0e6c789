"""graph.for_checker: onnx's checker judges the model with its large raw weights as empty
stand-ins, and says exactly what it says of the model itself."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper

from convrewrite.graph import _BYTE_SIZED, check_tensor_sizes, for_checker
from convrewrite.errors import BadInputError
from convrewrite.models import resnet50

TYPES = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8,
         TensorProto.UINT8, TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING,
         TensorProto.UNDEFINED, TensorProto.INT4, TensorProto.COMPLEX64, TensorProto.BFLOAT16]


def _verdict(model: onnx.ModelProto) -> str:
    try:
        onnx.checker.check_model(model)
        return "ok"
    except onnx.checker.ValidationError as exc:
        return str(exc)


@st.composite
def tensors(draw):
    data_type = draw(st.sampled_from(TYPES))
    n = draw(st.sampled_from([0, 1, 20_000, 70_000]))
    t = TensorProto(name=draw(st.sampled_from(["w", "x", "w2"])), data_type=data_type)
    t.dims.extend(draw(st.sampled_from([[n], [n, 1], [1, n], [2, n // 2]])))
    size = np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize \
        if data_type not in (TensorProto.STRING, TensorProto.UNDEFINED, TensorProto.INT4) else 1
    fields = draw(st.sets(st.sampled_from(["raw", "short", "float", "int64", "segment",
                                           "external", "location"]), max_size=2))
    if "raw" in fields:
        t.raw_data = bytes(n * size)
    if "short" in fields:
        t.raw_data = bytes(max(n * size - 1, 0))
    if "float" in fields:
        t.float_data.extend([0.0] * min(n, 3))
    if "int64" in fields:
        t.int64_data.extend([0] * min(n, 3))
    if "segment" in fields:
        t.segment.begin = 0
    if "external" in fields:
        t.data_location = TensorProto.EXTERNAL
    if "location" in fields:
        t.external_data.add(key="location", value="nowhere.bin")
    return t


@settings(max_examples=300, deadline=None)
@given(st.lists(tensors(), min_size=1, max_size=3), st.booleans())
def test_same_verdict_as_on_the_model(initializers, as_input):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x0"], ["y"])], "g",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializers)
    if as_input:
        graph.input.extend([helper.make_tensor_value_info(t.name, TensorProto.FLOAT, [1])
                            for t in initializers])
    model = helper.make_model(graph)
    try:
        check_tensor_sizes(model)
    except BadInputError:
        return                  # refused before the checker is asked
    light = for_checker(model)
    assert _verdict(light) == _verdict(model)
    big = [t for t in model.graph.initializer if len(t.raw_data) > 1 << 16
           and t.data_type in _BYTE_SIZED and not t.external_data and not t.HasField("segment")
           and t.data_location != TensorProto.EXTERNAL and not t.float_data
           and not t.int64_data]
    assert light.ByteSize() <= model.ByteSize() - sum(len(t.raw_data) for t in big)


def test_resnet50_is_checked_without_its_weights():
    model = resnet50()
    light = for_checker(model)
    assert light.ByteSize() < 1_000_000 < 90_000_000 < model.ByteSize()
    assert _verdict(light) == _verdict(model) == "ok"
    assert for_checker(onnx.ModelProto()) .ByteSize() == 0
