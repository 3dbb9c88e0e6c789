"""Tolerance that knows the model (issue 12): the end-to-end check allows NOISE_MULTIPLE times the
original model's own noise floor (onnxruntime with all vs no graph optimisations), reports the floor
next to the error, and still fails real mismatches (a dropped bias, a wrong tap)."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import convrewrite as cr
from convrewrite.ort_weights import Apart
from convrewrite.verify import NOISE_MULTIPLE, Tolerance, compare

from .model_cases import conv_model

verify = importlib.import_module("convrewrite.verify")     # the module (cr.verify: a function)


def test_noise_allowance_widens_every_bound():
    ref, got = np.zeros(3), np.full(3, 1e-4)
    assert not compare(ref, got, 1e-5, 0.0)["passed"]
    assert compare(ref, got, 1e-5, 0.0, noise=1e-4)["passed"]


def test_report_carries_the_floor_next_to_the_error():
    rewritten, report = cr.rewrite(conv_model(k=7, cin=64, cout=8, hw=16), "k210")
    e = report.end_to_end
    assert e["passed"] and e["noise_floor"] is not None and e["noise_multiple"] == NOISE_MULTIPLE
    assert "noise floor" in report.render()


def test_a_rewrite_within_the_floor_passes(monkeypatch):
    """A model whose own floor is 1e-3: a difference of 2e-3 (under 4x the floor, over atol)
    passes; one of 1e-2 fails."""
    original = conv_model(k=3)
    monkeypatch.setattr(verify, "noise_floor", lambda o, f, r, names: {n: 1e-3 for n in names})
    feeds = verify.make_inputs(original)
    for shift, passed in ((2e-3, True), (1e-2, False)):
        shifted = _with_bias(original, lambda b: b + shift)
        stats = verify.verify_end_to_end(original, shifted, feeds, Tolerance(), "exact")
        assert stats["passed"] is passed and stats["noise_floor"] == 1e-3


def _with_bias(model, change):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name == "B":
            t.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(t)), "B"))
    return out


def test_injected_mismatches_still_fail():
    """A dropped bias and a wrong tap, against the real floor of the model: both fail."""
    original, _ = cr.rewrite(conv_model(k=7, cin=64, cout=8, hw=16), "generic")
    rewritten, report = cr.rewrite(conv_model(k=7, cin=64, cout=8, hw=16), "k210")
    assert report.status == "ok"
    dropped = onnx.ModelProto()
    dropped.CopyFrom(rewritten)
    adds = [n for n in dropped.graph.node if n.op_type == "Conv" and len(n.input) == 3]
    assert adds
    del adds[0].input[2]                          # the bias of one sub-conv dropped
    assert cr.verify(original, dropped).status == "mismatch"
    wrong = onnx.ModelProto()
    wrong.CopyFrom(rewritten)
    weights = {t.name: t for t in wrong.graph.initializer}
    conv = next(n for n in wrong.graph.node if n.op_type == "Conv" and n.input[1] in weights)
    w = numpy_helper.to_array(weights[conv.input[1]]).copy()
    w = np.flip(w, axis=-1).copy()                # taps mirrored: a wrong tap
    weights[conv.input[1]].CopyFrom(numpy_helper.from_array(w, conv.input[1]))
    bad = cr.verify(original, wrong)
    assert bad.status == "mismatch" and bad.end_to_end["noise_floor"] is not None


@pytest.mark.parametrize("cin", [4, 64])       # W: 3 KiB in the protobuf; 784 KiB beside it
def test_the_floor_costs_one_more_session_of_the_original(monkeypatch, cin):
    """The original's weights are in two sessions in all: at onnxruntime's default level (its
    reference run, folded into the local checks' run, where the record's original reads the same
    weight) and with optimisations off (the floor). A weight large enough to go to onnxruntime
    beside the protobuf is read out of the original once: both sessions get the same array."""
    model = conv_model(k=7, cin=cin, cout=cin)
    weight = next(t.raw_data for t in model.graph.initializer if t.name == "W")
    levels, arrays = [], []
    real = verify.session

    def counting(m, level=None):
        proto, given = (m.model, m.arrays) if isinstance(m, Apart) else (m, {})
        found = [a for a in given.values() if a.nbytes == len(weight) and a.tobytes() == weight]
        if found or any(t.raw_data == weight for t in proto.graph.initializer):
            levels.append(level)
            arrays.extend(found)
        return real(m, level)

    monkeypatch.setattr(verify, "session", counting)
    _, report = cr.rewrite(model, "k210")
    assert report.status == "ok" and report.records
    assert sorted(levels, key=str) == [None, "disable"]
    if cin == 64:
        assert len(arrays) == 2 and np.shares_memory(*arrays)
