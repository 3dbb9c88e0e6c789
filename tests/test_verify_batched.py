"""The local checks run as one model (every record's original beside the rewritten graph): a
single wrong record among many still fails, and is the one named."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from convrewrite.pipeline import rewrite_model
from convrewrite.report import Report
from convrewrite.target import load_target
from convrewrite.verify import Tolerance, make_inputs
from tests.conv_cases import conv_model

verify = importlib.import_module("convrewrite.verify")     # the module (convrewrite.verify: a function)


def _rewritten():
    """A 1-D conv tiled for k210: nested records (conv -> 2-D form -> taps -> tiles) whose pieces
    share tensors (one's output is the next one's input)."""
    model = conv_model(cin=4, cout=4, kernel=(9,), pads=(4, 4), spatial=(3000,))
    rewritten, result = rewrite_model(model, load_target("k210"))
    assert len(result.records) >= 20
    return model, rewritten, result.records


def _mirrored(model: onnx.ModelProto, weight: str) -> None:
    tensor = next(t for t in model.graph.initializer if t.name == weight)
    w = numpy_helper.to_array(tensor)
    tensor.CopyFrom(numpy_helper.from_array(np.flip(w, axis=-1).copy(), weight))


def test_every_record_passes_and_carries_its_stats():
    model, rewritten, records = _rewritten()
    verify.verify_records(records, rewritten, make_inputs(model), Tolerance())
    assert all(r.verify["passed"] and r.verify["elements"] > 0 for r in records)


def test_one_wrong_replacement_among_many_fails_and_is_named():
    model, rewritten, records = _rewritten()
    feeds = make_inputs(model)
    nested = {r.node for r in records for s in records if s.node.startswith(r.node + "/")}
    leaf = next(r for r in records if r.node not in nested)
    piece = verify.extract(rewritten, [leaf.input_name], [leaf.output_name],
                           {leaf.input_name: np.zeros(1, np.float32)})
    weights = {t.name for t in rewritten.graph.initializer}
    conv = next(n for n in piece.graph.node if n.op_type == "Conv" and n.input[1] in weights)
    wrong = onnx.ModelProto()
    wrong.CopyFrom(rewritten)
    node = next(n for n in wrong.graph.node if n.name == conv.name)
    w = numpy_helper.to_array(next(t for t in wrong.graph.initializer if t.name == node.input[1]))
    node.input[1] = "mirrored_taps"                 # this sub-conv alone reads wrong taps
    wrong.graph.initializer.append(numpy_helper.from_array(np.flip(w, axis=-1).copy(),
                                                           "mirrored_taps"))
    verify.verify_records(records, wrong, feeds, Tolerance())
    failed = [r.node for r in records if not r.verify["passed"]]
    holding = [r.node for r in records if r.node == leaf.node or
               leaf.node.startswith(r.node + "/")]  # the leaf and the records it is part of
    assert leaf.node in failed and sorted(failed) == sorted(holding)
    assert len(failed) < len(records) // 2
    assert Report(model="m", target="k210", records=records).mismatches == failed


def test_one_wrong_original_among_many_fails_alone():
    """The originals sit in one graph renamed apart: a wrong one is checked against its own
    replacement only."""
    model, rewritten, records = _rewritten()
    k = len(records) // 2
    before = records[k].before
    weight = next(n.input[1] for n in before.graph.node if n.op_type == "Conv")
    _mirrored(before, weight)
    verify.verify_records(records, rewritten, make_inputs(model), Tolerance())
    assert [r.node for r in records if not r.verify["passed"]] == [records[k].node]
    assert records[k].verify["mismatches"] > 0


def test_a_record_that_cannot_merge_is_checked_alone(monkeypatch):
    """The fallback (two models of its own) gives the same verdicts and statistics."""
    model, rewritten, records = _rewritten()
    feeds = make_inputs(model)
    verify.verify_records(records, rewritten, feeds, Tolerance())
    together = [dict(r.verify) for r in records]
    monkeypatch.setattr(verify.local_checks, "mergeable", lambda before, model: False)
    verify.verify_records(records, rewritten, feeds, Tolerance())
    for stats, record in zip(together, records):
        assert record.verify["passed"] and stats["passed"]
        assert record.verify["elements"] == stats["elements"]
        assert np.isclose(record.verify["max_abs"], stats["max_abs"], atol=1e-5)


def test_the_original_folded_into_the_checks_run_gives_its_own_reference(monkeypatch):
    """The reference made inside the checks' run is the original's own run, output for output;
    when the original cannot be folded the separate runs give the same verdicts."""
    model, rewritten, records = _rewritten()
    feeds = make_inputs(model)
    alone = verify.reference_run(model, feeds)
    folded, _, _ = verify.verify_with_reference(model, records, rewritten, feeds, Tolerance())
    assert folded.engine == alone.engine == verify.ONNXRUNTIME
    assert folded.outputs.keys() == alone.outputs.keys()
    for name, value in alone.outputs.items():
        assert np.allclose(folded.outputs[name], value, rtol=1e-5, atol=1e-5)
    verdicts = [r.verify["passed"] for r in records]
    monkeypatch.setattr(verify.local_checks, "foldable", lambda original, rewritten: False)
    separate, _, _ = verify.verify_with_reference(model, records, rewritten, feeds, Tolerance())
    assert separate.outputs.keys() == alone.outputs.keys()
    assert [r.verify["passed"] for r in records] == verdicts == [True] * len(records)


def test_the_tidied_model_folded_into_the_checks_run_gives_its_own_outputs():
    """The model the end-to-end check compares, run inside the checks' run, gives what its own
    run gives; a wrong one (a weight mirrored) gives its own wrong outputs, not the rewritten
    model's, so the end-to-end check still fails on it."""
    model, rewritten, records = _rewritten()
    feeds = make_inputs(model)
    wrong = onnx.ModelProto()
    wrong.CopyFrom(rewritten)
    conv = next(n for n in wrong.graph.node if n.op_type == "Conv")
    _mirrored(wrong, conv.input[1])
    for tidied in (rewritten, wrong):
        _, own, also = verify.verify_with_reference(model, records, rewritten, feeds,
                                                    Tolerance(), tidied=tidied)
        alone = verify.run(tidied, feeds)
        assert also.keys() == alone.keys() == own.keys()
        for name, value in alone.items():
            assert np.array_equal(also[name], value)
    assert not all(np.array_equal(also[n], own[n]) for n in own)
    assert all(r.verify["passed"] for r in records)


def test_a_float_rewrite_runs_its_tidied_model_alone_as_shipped(monkeypatch):
    """A model compared at onnxruntime's full level: the original and every record's check in
    one session, the tidied model alone at the level a user loads it (the end-to-end run and the
    load check at once), the original's noise floor; the verdict fails on a wrong tidied model."""
    from convrewrite import api, pipeline
    from convrewrite.models import demo_wide
    model = demo_wide()         # channel splits whose Concat -> Split round trips tidy fuses
    target = {"name": "c64", "conv": {"max_in_channels": 64, "max_out_channels": 64}}
    made, tidied = [], []
    session, tidy = verify.session, pipeline._tidy
    monkeypatch.setattr(verify, "session", lambda m, level=None: made.append(level) or
                        session(m, level))

    def counted_tidy(m, *args):
        out = tidy(m, *args)
        tidied.append(out is not m)
        return out
    monkeypatch.setattr(pipeline, "_tidy", counted_tidy)
    _, report = api.rewrite(model, target)
    assert report.status == "ok" and report.end_to_end["passed"] and tidied == [True]
    assert made == [None, None, "disable"]

    def wrong_tidy(current, target, passes, result):
        wrong = onnx.ModelProto()
        wrong.CopyFrom(current.model)
        conv = next(n for n in wrong.graph.node if n.op_type == "Conv")
        _mirrored(wrong, conv.input[1])
        return pipeline.Current(wrong)
    monkeypatch.setattr(pipeline, "_tidy", wrong_tidy)
    _, report = api.rewrite(model, target)
    assert report.status == "mismatch" and not report.end_to_end["passed"]
    assert all(r.verify["passed"] for r in report.records)


def _float64_rewritten():
    """A float64 conv tiled for k210: onnxruntime has no float64 Conv kernel, so the run with the
    original folded in fails and the checks run on onnx's reference evaluator."""
    model = conv_model(cin=2, cout=2, kernel=(7, 7), pads=(3, 3, 3, 3), spatial=(12, 12),
                       dtype=np.float64)
    rewritten, result = rewrite_model(model, load_target("k210"))
    assert result.records
    return model, rewritten, result.records


def test_a_failed_folded_run_falls_back_and_says_on_which_engine():
    model, rewritten, records = _float64_rewritten()
    feeds = make_inputs(model)
    reference, _, _ = verify.verify_with_reference(model, records, rewritten, feeds, Tolerance())
    assert reference.engine == verify.REFERENCE
    assert reference.fallback and "NOT_IMPLEMENTED" in reference.fallback
    assert all(r.verify["passed"] and r.verify["engine"] == verify.REFERENCE for r in records)


def test_a_folded_run_that_works_names_no_engine_per_record():
    model, rewritten, records = _rewritten()
    reference, _, _ = verify.verify_with_reference(model, records, rewritten, make_inputs(model),
                                                Tolerance())
    assert reference.fallback is None
    assert all("engine" not in r.verify for r in records)


def test_an_error_of_ours_in_the_folded_run_is_raised_not_swallowed(monkeypatch):
    """Only onnxruntime's failures and our one-line errors send the checks down the separate
    path; a bug in folding the original in (here a KeyError) surfaces."""
    model, rewritten, records = _rewritten()
    merge = verify.local_checks.merge

    def broken(rewritten, records, befores, producers, original=None, tidied=None):
        if original is not None:
            raise KeyError("a bug")
        return merge(rewritten, records, befores, producers)

    monkeypatch.setattr(verify.local_checks, "merge", broken)
    with pytest.raises(KeyError, match="a bug"):
        verify.verify_with_reference(model, records, rewritten, make_inputs(model), Tolerance())


def test_the_report_says_the_checks_fell_back_and_on_which_engine():
    from convrewrite.api import rewrite
    model, _, _ = _float64_rewritten()
    _, report = rewrite(model, "k210")
    assert any("every check on onnx.reference" in note for note in report.notes)
    assert all(r.verify["engine"] == "onnx.reference" for r in report.records)
