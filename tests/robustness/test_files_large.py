"""Models over protobuf's 2 GB (issue 12, class 2): --check-only, a no-op re-save and a real
rewrite must all work and keep external data. graph.PROTOBUF_LIMIT is the one threshold every
big-model path asks (graph.fits_in_protobuf), so lowering it sends small models down those paths
in seconds; one real > 2 GB model is marked ``slow`` (off by default: minutes, ~10 GB of RAM)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from convrewrite import graph
from tests.robustness.harness import Case, run_case, write_model
from tests.robustness.models import small_model, wide_model, write_chip


def _external(folder):
    out = onnx.load(str(folder / "out.onnx"), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in out.graph.initializer)


def _cases():
    def rewrite(folder):
        write_model(folder, "in.onnx", wide_model(), external="in.onnx.data")
        write_chip(folder)
        return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx"]

    def resave(folder):
        write_model(folder, "in.onnx", small_model(), external="in.onnx.data")
        return ["in.onnx", "--target", "generic", "-o", "out.onnx"]

    def inline_input(folder):                # a "big" model that was not external on disk
        write_model(folder, "in.onnx", wide_model())
        write_chip(folder)
        return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx"]

    def check_only(folder):
        write_model(folder, "in.onnx", wide_model(), external="in.onnx.data")
        write_chip(folder)
        return ["in.onnx", "--target", "chip.yaml", "--check-only"]

    keeps = lambda folder, result: (_ for _ in ()).throw(AssertionError("no external data")) \
        if not _external(folder) else None     # noqa: E731
    yield Case("big_rewrite", rewrite, check=keeps)
    yield Case("big_resave", resave, check=keeps)
    yield Case("big_inline_input", inline_input, check=keeps)
    yield Case("big_check_only", check_only, expect=3)


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c.name)
def test_big_model_paths(case, tmp_path, monkeypatch):
    monkeypatch.setattr(graph, "PROTOBUF_LIMIT", 1)         # every model is "too big"
    run_case(case, tmp_path)


def test_big_path_rewrites_to_the_same_graph(tmp_path, monkeypatch):
    """The faked-big run and the normal run give the same model (external data aside)."""
    normal = tmp_path / "normal"
    run_case(next(c for c in _cases() if c.name == "big_rewrite"), normal)
    monkeypatch.setattr(graph, "PROTOBUF_LIMIT", 1)
    big = tmp_path / "big"
    run_case(next(c for c in _cases() if c.name == "big_rewrite"), big)
    a = onnx.load(str(normal / "out.onnx"))
    b = onnx.load(str(big / "out.onnx"))
    assert [n.SerializeToString() for n in a.graph.node] == \
        [n.SerializeToString() for n in b.graph.node]
    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_shape_inference_without_large_tensors_matches(monkeypatch):
    model = wide_model()
    full = graph.infer_shapes(model)
    monkeypatch.setattr(graph, "PROTOBUF_LIMIT", 1)
    monkeypatch.setattr(graph, "LARGE_TENSOR_BYTES", 16)
    before = model.SerializeToString()
    light = graph.infer_shapes(model)
    assert model.SerializeToString() == before                   # the caller's model untouched
    assert {v.name: v.SerializeToString() for v in full.graph.value_info} == \
        {v.name: v.SerializeToString() for v in light.graph.value_info}
    assert len(light.graph.initializer[0].raw_data or b"") > 0    # weights kept in the result


def huge_model() -> onnx.ModelProto:
    """A 64 -> 48 conv plus two 1.1 GB tables each read by one Gather (cheap to run, 2.2 GB to
    store; one tensor over 2 GB cannot even be appended to a Python protobuf)."""
    base = wide_model()
    for name in ("table_a", "table_b"):
        base.graph.initializer.add().CopyFrom(
            numpy_helper.from_array(np.zeros(280_000_000, dtype=np.float32), name))
    base.graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int64), "idx"))
    out = base.graph.output[0].name
    base.graph.output[0].name = "conv_out"
    for node in base.graph.node:
        node.output[:] = ["conv_out" if o == out else o for o in node.output]
    base.graph.node.extend([
        helper.make_node("Gather", ["table_a", "idx"], ["ga"], name="ga"),
        helper.make_node("Gather", ["table_b", "idx"], ["gb"], name="gb"),
        helper.make_node("Add", ["conv_out", "ga"], ["plus_a"], name="plus_a"),
        helper.make_node("Add", ["plus_a", "gb"], [out], name="plus_b")])
    return base


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["check", "resave", "rewrite"])
def test_real_model_over_2gb(tmp_path, mode):
    folder = tmp_path
    model = huge_model()
    graph.save_model(model, folder / "in.onnx", external_data=True)
    del model
    write_chip(folder)
    target = "generic" if mode == "resave" else "chip.yaml"
    tail = ["--check-only"] if mode == "check" else ["-o", "out.onnx"]

    def setup(_):
        return ["in.onnx", "--target", target, *tail]
    run_case(Case(f"huge_{mode}", setup, expect=3 if mode == "check" else 0), folder)


def test_copy_model_field_by_field_is_exact(monkeypatch):
    model = wide_model()
    monkeypatch.setattr(graph, "PROTOBUF_LIMIT", 1)
    copy = graph.copy_model(model)
    assert copy.SerializeToString() == model.SerializeToString()
    copy.graph.initializer[0].raw_data = b""
    assert model.graph.initializer[0].raw_data                    # a copy, not a view
