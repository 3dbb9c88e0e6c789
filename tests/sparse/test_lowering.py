"""SparseConv lowered to standard ONNX, both rulebook forms, against the dense reference on
onnxruntime; and through the pipeline, with its records and verification."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from convrewrite import api
from convrewrite.pipeline import rewrite_model
from convrewrite.sparse import SparseConvAttrs, sparse_conv
from convrewrite.sparse.reference import dense_reference
from convrewrite.target import load_target
from convrewrite.verify import run
from tests.sparse.cases import HOST, random_sparse, sparse_model

CASES = [   # rank, submanifold, kernel, strides, pads, dilations, batches, grid, count
    (2, True, 3, None, None, 1, 1, (8, 9), 30),
    (2, True, 5, None, None, 2, 3, (10, 7), 60),
    (2, False, 3, 1, [0, 0, 0, 0], 1, 2, (6, 6), 10),
    (2, False, 3, 2, [1, 0, 2, 1], 1, 2, (9, 8), 25),
    (2, False, 2, 2, [0, 0, 0, 0], 1, 1, (8, 8), 20),
    (3, True, 3, None, None, 1, 2, (6, 5, 7), 50),
    (3, False, 3, 2, [1, 1, 1, 1, 1, 1], 2, 2, (7, 6, 8), 40),
    (3, False, 1, 1, [0] * 6, 1, 1, (4, 4, 4), 9),
    (2, False, 2, 2, [1, 0, 0, 0], 1, 2, (9, 7), 40),   # windows tile the grid; column 6 cut off
]


def _case(case, seed=0):
    rank, sub, k, s, pads, d, batches, grid, count = case
    attrs = SparseConvAttrs.create([k] * rank, grid, None if s is None else [s] * rank, pads,
                                   [d] * rank, sub)
    rng, coords, features = random_sparse(seed, batches, grid, count, 5)
    w = rng.uniform(-1, 1, (6, 5, *attrs.kernel_shape)).astype(np.float32)
    b = rng.uniform(-1, 1, 6).astype(np.float32)
    return attrs, coords, features, w, b


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("form", ["graph", "graph-sorted", "precomputed"])
def test_lowering_matches_dense_reference(case, form, monkeypatch):
    """In the graph: by the index grid, and by sorting (a grid over the limit); precomputed."""
    if form == "graph-sorted":
        monkeypatch.setattr("convrewrite.sparse.index_grid.GRID_LIMIT", 0)
    attrs, coords, features, w, b = _case(case)
    model = sparse_model(attrs, w, b, coords=coords if form == "precomputed" else None)
    lowered, result = rewrite_model(model, load_target(HOST))
    assert not any(n.domain == "ai.convrewrite" for n in lowered.graph.node)
    assert len(result.records) == 1
    rewrite = result.records[0].rewrite
    assert ("precomputed" in rewrite) == (form == "precomputed")
    if form.startswith("graph") and attrs.kernel_volume > 1:
        assert ("sort-based lookups" in rewrite) == (form == "graph-sorted")
        assert ("dense index grid of" in rewrite) == (form == "graph")
    if form == "graph" and (attrs.kernel_volume > 1 or not attrs.submanifold):
        assert "sorted by key first" in rewrite         # the sites arrive in random order
    feeds = {"features": features} if form == "precomputed" else \
        {"features": features, "coordinates": coords}
    got = run(lowered, feeds)
    ref_f, ref_c = dense_reference(features, coords, w, b, attrs)
    np.testing.assert_array_equal(got["out_coordinates"], ref_c)
    np.testing.assert_allclose(got["out_features"], ref_f, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["out_features"], sparse_conv(features, coords, w, b,
                                                                attrs=attrs)[0], rtol=1e-5, atol=1e-5)


def test_deterministic_on_two_threads():
    """Many pairs land on every output row: one scatter over all taps would race here."""
    attrs, coords, features, w, b = _case((3, True, 3, None, None, 1, 1, (8, 8, 8), 400))
    lowered, _ = rewrite_model(sparse_model(attrs, w, b), load_target(HOST))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(lowered.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    runs = [sess.run(["out_features"], {"features": features, "coordinates": coords})[0]
            for _ in range(4)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    np.testing.assert_allclose(runs[0], dense_reference(features, coords, w, b, attrs)[0],
                               rtol=1e-5, atol=1e-5)


def test_graph_form_on_other_coordinates_than_at_rewrite_time():
    attrs, coords, features, w, b = _case(CASES[3])
    lowered, _ = rewrite_model(sparse_model(attrs, w, b), load_target(HOST))
    for seed, count in ((1, 1), (2, 70), (3, 5)):
        _, c, f = random_sparse(seed, 2, attrs.spatial_shape, count, 5)
        got = run(lowered, {"features": f, "coordinates": c})
        ref_f, ref_c = dense_reference(f, c, w, b, attrs)
        np.testing.assert_array_equal(got["out_coordinates"], ref_c)
        np.testing.assert_allclose(got["out_features"], ref_f, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["graph", "precomputed"])
def test_pipeline_records_and_verifies(form):
    attrs, coords, features, w, b = _case(CASES[6])
    model = sparse_model(attrs, w, b, coords=coords if form == "precomputed" else None,
                         coord_dtype=np.int64)
    inputs = {"features": features} if form == "precomputed" else \
        {"features": features, "coordinates": coords.astype(np.int64)}
    _, report = api.rewrite(model, HOST, inputs=inputs)
    assert report.status == "ok"
    (record,) = report.records
    assert record.pass_name == "sparse_conv"
    assert record.verify["passed"] and report.end_to_end["passed"]
    assert record.more_outputs == ["out_coordinates"]           # the sites are compared too
    assert any("rulebook" in n for n in record.notes)
    if form == "precomputed":
        assert record.macs_before == record.macs_after > 0


def test_seeded_inputs_are_valid_sites():
    """Without --inputs, coordinates are drawn as distinct sites of the grid."""
    attrs, _, _, w, b = _case(CASES[5])
    _, report = api.rewrite(sparse_model(attrs, w, b), HOST)
    assert report.status == "ok"
    assert report.inputs["coordinates"]["shape"] == [64, 4]
    assert report.inputs["features"]["shape"] == [64, 5]


def _drop_first_tap(lowering, name):
    """``lowering.<name>`` with tap 0 of the rulebook left out (its pairs, or its table column)."""
    original = getattr(lowering, name)

    def broken(features, taps, bias, rb, out, e):
        if name == "implicit_gemm_graph":
            keep = np.ones((1, rb.table_taps), np.int32)
            keep[0, 0] = 0
            rb.table = e.op("Mul", [rb.table, e.const("drop_tap0", keep)], "broken_table")
        else:
            rb.pairs = [None if k == 0 else p for k, p in enumerate(lowering.tap_pairs(rb, e))]
        return original(features, taps, bias, rb, out, e)
    return broken


@pytest.mark.parametrize("case, form", [(0, "implicit_gemm_graph"), (2, "implicit_gemm_graph"),
                                        (2, "gather_gemm_scatter")])
def test_a_wrong_lowering_is_caught(monkeypatch, case, form):
    """Verification is not vacuous: leave one tap out and both checks fail (the implicit form of
    a submanifold and a dilating regular conv; the per-tap form, with sort-based lookups)."""
    import convrewrite.sparse.onnx_form as lowering
    if form == "gather_gemm_scatter":
        monkeypatch.setattr("convrewrite.sparse.index_grid.GRID_LIMIT", 0)
    monkeypatch.setattr(f"convrewrite.passes.sparse_conv.{form}", _drop_first_tap(lowering, form))
    attrs, coords, features, w, b = _case(CASES[case])
    _, report = api.rewrite(sparse_model(attrs, w, b), HOST,
                            inputs={"features": features, "coordinates": coords})
    assert ("implicit GEMM" if form.startswith("implicit") else "ScatterND(add)") in \
        report.records[0].rewrite
    assert report.status == "mismatch"
    assert not report.records[0].verify["passed"] and not report.end_to_end["passed"]


def test_declined_without_the_ops_or_the_opset():
    attrs, _, _, w, b = _case(CASES[0])
    _, report = api.rewrite(sparse_model(attrs, w, b), "generic")
    assert report.status == "illegal"
    assert "lacks" in report.remaining[0].reasons[0] and "ScatterND" in report.remaining[0].reasons[0]
    _, report = api.rewrite(sparse_model(attrs, w, b, opset=15), HOST)
    assert report.status == "illegal" and "opset >= 16" in report.remaining[0].reasons[0]


def test_pointwise_submanifold_conv_is_one_matmul():
    """A 1x1 submanifold conv reads no neighbour: its precomputed form is the MatMul alone (it
    was put in coordinate order and back: two Gathers of every row)."""
    attrs = SparseConvAttrs.create([1, 1, 1], (6, 5, 7), None, None, None, True)
    rng, coords, features = random_sparse(3, 2, (6, 5, 7), 50, 5)     # rows in random order
    w = rng.uniform(-1, 1, (6, 5, 1, 1, 1)).astype(np.float32)
    lowered, _ = rewrite_model(sparse_model(attrs, w, None, coords=coords), load_target(HOST))
    ops = sorted(n.op_type for n in lowered.graph.node)
    assert "Gather" not in ops and ops.count("MatMul") == 1, ops
    ref_f, _ = dense_reference(features, coords, w, None, attrs)
    np.testing.assert_allclose(run(lowered, {"features": features})["out_features"], ref_f,
                               rtol=1e-5, atol=1e-5)
