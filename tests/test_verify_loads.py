"""The end-to-end check also loads the rewritten model as a user would (onnxruntime, all graph
optimisations): the comparisons may have run it only merged with the local checks' originals, or
at the basic level, and a model onnxruntime refuses is a failure, never an `ok`."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from convrewrite.ort_setup import ORT_ERRORS
from convrewrite.verify import Reference, Tolerance, verify_end_to_end

verify = importlib.import_module("convrewrite.verify")   # the package exports a function too


def _conv_model(padded_weight: bool) -> onnx.ModelProto:
    """Conv over x with a weight fed at run time; ``padded_weight``: the 2x2 weight zero-extended
    to 3x3 by a Pad in front of the conv's weight input (what kernel_split once emitted)."""
    nodes, w_shape = [], [3, 2, 3, 3]
    weight = "w"
    if padded_weight:
        w_shape = [3, 2, 2, 2]
        nodes.append(helper.make_node("Pad", ["w", "pads"], ["w3"]))
        weight = "w3"
    nodes.append(helper.make_node("Conv", ["x", weight], ["y"], pads=[1, 1, 1, 1]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
                     helper.make_tensor_value_info("w", TensorProto.FLOAT, w_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])],
        [numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads")]
        if padded_weight else [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(model):
    rng = np.random.default_rng(0)
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])
            .astype(np.float32) for i in model.graph.input}


def _loads_at_all(model) -> bool:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except ORT_ERRORS:
        return False
    return True


def _end_to_end(model):
    """verify_end_to_end with the outputs a merged run made (here: the model run unoptimised)."""
    feeds = _feeds(model)
    outputs = verify.run(model, feeds, level="disable")
    return verify_end_to_end(model, model, feeds, Tolerance(), "exact",
                             Reference(verify.ONNXRUNTIME, outputs), floor=False, outputs=outputs)


def test_a_model_that_loads_passes():
    stats = _end_to_end(_conv_model(padded_weight=False))
    assert stats["passed"] and "error" not in stats


@pytest.mark.parametrize("padded_weight", [True])
def test_onnxruntimes_verdict_on_loading_is_the_checks(padded_weight):
    """The real case: with onnxruntime 1.32, Pad -> Conv weight fails to load at ENABLE_ALL."""
    model = _conv_model(padded_weight)
    stats = _end_to_end(model)
    assert stats["passed"] == _loads_at_all(model)
    if not stats["passed"]:
        assert "refuses the rewritten model with its default graph optimisations" in stats["error"]


def test_a_model_refused_at_all_fails(monkeypatch):
    """Whatever onnxruntime's version: a refusal at the 'all' level fails the check."""
    real = verify.session

    def refusing(model, level=None):
        if level == "all":
            raise ORT_ERRORS[0]("the fusion broke it")
        return real(model, level)

    monkeypatch.setattr(verify, "session", refusing)
    stats = _end_to_end(_conv_model(padded_weight=False))
    assert not stats["passed"] and "the fusion broke it" in stats["error"]
