"""Conv weights computed from constants (issue 14 item 8): folded into initializers for the convs
a target rejects, so the lowerings can slice them; the rewritten model still matches the
original on onnxruntime, other readers of the computed tensor keep their values, and operands
that cannot be folded (random, too large, behind a graph input) are named with the reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import convrewrite as cr
from convrewrite.passes import fold_weights
from tests.conv_cases import (CIN, COUT, K, computed, computed_weight_model, const_of_shape,
                              conv_model, random_input, run)

def weights_are_initializers(model: onnx.ModelProto, conv: onnx.NodeProto) -> bool:
    """The conv's weight and bias are initializers (or a DequantizeLinear of initializers)."""
    inits = {t.name for t in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    for name in conv.input[1:]:
        node = made.get(name)
        if name in inits or node is not None and node.op_type == "DequantizeLinear" and \
                set(node.input) <= inits:
            continue
        return False
    return True


def close_to_original(model: onnx.ModelProto, out: onnx.ModelProto) -> None:
    feeds = random_input(model)
    for ref, got in zip(run(model, feeds), run(out, feeds)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form, ops", [("constant_of_shape", "ConstantOfShape"),
                                       ("mul", "Add, Mul"), ("qdq", "Neg")])
def test_computed_weights_are_folded_and_the_conv_lowered(form, ops):
    model = computed_weight_model(form)
    out, report = cr.rewrite(model, "k210")
    assert report.status == "ok", report.render()
    assert report.records and report.end_to_end["passed"]
    assert not cr.check(out, "k210").remaining
    folded = [n for n in report.notes if n.startswith("folded ")]
    assert len(folded) == 1 and f"({ops}) into initializers" in folded[0], report.notes
    assert folded[0].endswith(": conv"), folded
    assert all(weights_are_initializers(out, n) for n in out.graph.node if n.op_type == "Conv")
    close_to_original(model, out)


def test_other_readers_of_the_computed_weight_keep_it():
    model = computed_weight_model("mul")
    model.graph.node.append(helper.make_node("ReduceSum", ["W"], ["w_sum"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("w_sum", TensorProto.FLOAT, []))
    out, report = cr.rewrite(model, "k210")
    assert report.status == "ok", report.render()
    assert "Mul" in {n.op_type for n in out.graph.node}        # still computed for ReduceSum
    close_to_original(model, out)


def test_a_legal_conv_with_a_computed_weight_is_left_alone():
    model = conv_model(cin=CIN, cout=COUT, kernel=(3, 3), pads=(1, 1, 1, 1))
    model = computed(model, "W", const_of_shape("W", [COUT, CIN, 3, 3], 0.25))
    out, report = cr.rewrite(model, "k210")
    assert report.status == "ok" and not report.records and out is model
    assert not any(n.startswith("folded ") for n in report.notes)


def _reasons(report) -> list[str]:
    return [r for remaining in report.remaining for r in remaining.reasons]


def test_a_fold_over_the_size_cap_is_declined_with_the_reason(monkeypatch):
    monkeypatch.setattr(fold_weights, "FOLD_LIMIT", 64)
    model = computed_weight_model("constant_of_shape")
    before = model.SerializeToString()
    out, report = cr.rewrite(model, "k210")
    assert report.status == "illegal" and out is model
    assert model.SerializeToString() == before
    assert any(r.startswith("fold_weights: the weight 'W' is not folded") and "more than 64" in r
               for r in _reasons(report)), _reasons(report)
    assert not any(n.startswith("folded ") for n in report.notes)


def test_a_random_weight_is_not_folded():
    model = conv_model(cin=CIN, cout=COUT, kernel=(K, K), pads=(2, 2, 2, 2))
    model = computed(model, "W", [helper.make_node("RandomNormal", [], ["W"],
                                                   shape=[COUT, CIN, K, K], seed=1.0)])
    _, report = cr.rewrite(model, "k210", verify=False)
    assert report.status == "illegal"
    assert any("fold_weights" in r and "random" in r for r in _reasons(report)), _reasons(report)


def test_a_weight_computed_from_a_graph_input_is_sliced_in_the_graph_not_folded():
    model = computed_weight_model("mul")
    model.graph.input.append(helper.make_tensor_value_info("S", TensorProto.FLOAT,
                                                           [COUT, 1, 1, 1]))
    kept = [t for t in model.graph.initializer if t.name != "S"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    out, report = cr.rewrite(model, "k210")
    assert report.status == "ok", report.render()
    assert not any("fold_weights" in n for n in report.notes), report.notes
    assert "S" in {i.name for i in out.graph.input}


def test_check_only_changes_nothing_and_names_the_lowering():
    model = computed_weight_model("constant_of_shape")
    before = model.SerializeToString()
    report = cr.check(model, "k210")
    assert model.SerializeToString() == before
    assert report.status == "illegal" and not report.records
    assert any("kernel_split would rewrite it" in r for r in _reasons(report)), _reasons(report)


@pytest.mark.parametrize("form", ["constant_of_shape", "mul", "qdq"])
def test_every_computed_operand_is_evaluated_in_one_session(form, monkeypatch):
    """Every computed operand in one run (one session, not one each), folding the same bytes
    as evaluating each alone; where that run fails, each is evaluated alone."""
    model = computed_weight_model(form)
    runs = []
    real = fold_weights.run
    monkeypatch.setattr(fold_weights, "run", lambda m, feeds: runs.append(len(m.graph.output))
                        or real(m, feeds))
    monkeypatch.setattr(fold_weights, "evaluate_all", lambda wanted, graph, like: {})
    alone, _ = cr.rewrite(model, "k210", verify=False)
    assert runs and set(runs) == {1}
    operands, runs[:] = len(runs), []
    monkeypatch.undo()
    monkeypatch.setattr(fold_weights, "run", lambda m, feeds: runs.append(len(m.graph.output))
                        or real(m, feeds))
    together, _ = cr.rewrite(model, "k210", verify=False)
    assert runs == [operands]
    assert together.SerializeToString() == alone.SerializeToString()

    def failing(m, feeds):
        if len(m.graph.output) > 1:
            raise RuntimeError("the joint run fails")
        return real(m, feeds)
    monkeypatch.setattr(fold_weights, "run", failing)
    fallback, report = cr.rewrite(model, "k210", verify=False)
    assert report.status == "ok"
    assert fallback.SerializeToString() == alone.SerializeToString()
