"""Tensors whose stored data does not match their dims (the fuzzer's first exit-4 class: a short
raw_data reached numpy's reshape inside a pass). load_model refuses them in one line."""

from __future__ import annotations

import numpy as np
import onnx

from tests.robustness.harness import Case, cases_param, run_case
from tests.robustness.models import wide_model, write_chip


def _broken(edit):
    def setup(folder):
        m = wide_model()
        edit(m)
        (folder / "in.onnx").write_bytes(m.SerializeToString())
        write_chip(folder)
        return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx"]
    return setup


def _init(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def _typed(m, name, values, dims):
    t = _init(m, name)
    t.CopyFrom(onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=dims,
                                float_data=values))


def tensor_cases():
    edits = {
        "weight_raw_short": lambda m: setattr(_init(m, "W"), "raw_data",
                                              _init(m, "W").raw_data[:-4]),
        "weight_raw_long": lambda m: setattr(_init(m, "W"), "raw_data",
                                             _init(m, "W").raw_data + b"\0" * 4),
        "weight_raw_empty": lambda m: setattr(_init(m, "W"), "raw_data", b""),
        "bias_raw_half": lambda m: setattr(_init(m, "B"), "raw_data",
                                           _init(m, "B").raw_data[:96]),
        "bias_dims_grown": lambda m: _init(m, "B").dims.__setitem__(0, 64),
        "weight_dims_shrunk": lambda m: _init(m, "W").dims.__setitem__(0, 47),
        "bias_typed_short": lambda m: _typed(m, "B", [0.0] * 47, [48]),
        "bias_typed_long": lambda m: _typed(m, "B", [0.0] * 49, [48]),
        "weight_dim_negative": lambda m: _init(m, "W").dims.__setitem__(0, -48),
    }
    for name, edit in edits.items():
        yield Case(f"tensor_{name}", _broken(edit), expect=2, needle="tensor")
    yield Case("tensor_typed_ok", _broken(lambda m: _typed(m, "B", list(np.zeros(48)), [48])))


@cases_param(tensor_cases())
def test_tensor_case(case, tmp_path):
    run_case(case, tmp_path)


def _bad_utf8(folder):
    data = wide_model().SerializeToString()
    assert data.count(b"x_relu") >= 1
    (folder / "in.onnx").write_bytes(data.replace(b"x_relu", b"x_\xff\xfelu"))
    write_chip(folder)
    return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx"]


@cases_param([Case("string_not_utf8", _bad_utf8, expect=2, needle="not UTF-8"),
              Case("string_not_utf8_check", lambda f: _bad_utf8(f)[:3] + ["--check-only"],
                   expect=2, needle="not UTF-8")])
def test_string_case(case, tmp_path):
    run_case(case, tmp_path)


def _as_uint4(m):
    """Weights relabelled UINT4 while keeping float bytes: 8x the packed size (fuzzer case)."""
    _init(m, "W").data_type = onnx.TensorProto.UINT4


@cases_param([Case("tensor_uint4_float_bytes", _broken(_as_uint4), expect=2, needle="tensor")])
def test_sub_byte_case(case, tmp_path):
    run_case(case, tmp_path)
