"""Comparison statistics, tolerances, inputs, and the user-facing pytest helper."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from convrewrite.errors import BadInputError
from convrewrite.testing import assert_equivalent
from convrewrite.verify import Tolerance, compare, make_inputs, parse_input_shapes
from tests.conv_cases import conv_model


def test_compare_reports_worst_location_and_min_atol():
    ref = np.zeros((1, 3, 2, 2), np.float32)
    got = ref.copy()
    got[0, 2, 1, 0] = 1e-3
    stats = compare(ref, got, atol=1e-5, rtol=1e-4)
    assert not stats["passed"] and stats["mismatches"] == 1
    assert stats["worst_index"] == [0, 2, 1, 0] and stats["worst_channel"] == 2
    assert stats["min_atol_to_pass"] == pytest.approx(1e-3)
    assert compare(ref, got, atol=1.1e-3, rtol=0)["passed"]
    assert compare(ref, ref, 0, 0)["bit_exact"]


def test_compare_nan_and_shape():
    a = np.array([1.0, np.nan], np.float32)
    assert compare(a, a.copy(), 0, 0)["passed"]
    assert not compare(a, np.array([1.0, 2.0], np.float32), 1, 1)["passed"]
    assert not compare(a, np.zeros(3, np.float32), 1, 1)["passed"]


def test_reassociating_scales_atol_by_magnitude():
    ref = np.array([1000.0, 0.0], np.float32)
    got = np.array([1000.0, 5e-3], np.float32)
    assert not compare(ref, got, atol=1e-5, rtol=1e-4)["passed"]
    assert compare(ref, got, atol=1e-5, rtol=1e-4, scale_atol=True)["passed"]


def test_tolerance_defaults_per_dtype():
    assert Tolerance().resolve(np.dtype(np.float32), "exact") == (1e-5, 1e-4)
    assert Tolerance().resolve(np.dtype(np.float16), "exact") == (2.5e-3, 1e-3)
    assert Tolerance().resolve(np.dtype(np.int8), "exact") == (0.0, 0.0)
    assert Tolerance(atol=1.0).resolve(np.dtype(np.float32), "exact") == (1.0, 1e-4)
    assert Tolerance(atol=1.0).merged(Tolerance(rtol=2.0)) == Tolerance(1.0, 2.0)


def test_inputs_are_seeded_symmetric_and_shaped():
    model = conv_model(cin=4, cout=4, batch="N", spatial=(5, 5))
    a = make_inputs(model, seed=3)["x"]
    assert a.shape == (1, 4, 5, 5) and a.min() < 0 < a.max()
    assert np.array_equal(a, make_inputs(model, seed=3)["x"])
    assert make_inputs(model, shapes={"x": (2, 4, 5, 5)})["x"].shape == (2, 4, 5, 5)
    with pytest.raises(BadInputError, match="not a model input"):
        make_inputs(model, shapes={"nope": (1,)})


def test_parse_input_shapes():
    assert parse_input_shapes(["x:1x3x224x224", "y:2,4"]) == {"x": (1, 3, 224, 224), "y": (2, 4)}
    with pytest.raises(BadInputError):
        parse_input_shapes(["x"])


def test_assert_equivalent_helper():
    a = conv_model(cin=8, cout=8)
    assert assert_equivalent(a, a)["bit_exact"]
    b = conv_model(cin=8, cout=8, seed=9)
    with pytest.raises(AssertionError, match="models differ at y"):
        assert_equivalent(a, b)


def test_assert_equivalent_accepts_paths(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model(cin=8, cout=8), path)
    assert_equivalent(path, str(path))
