"""The Python API (issue 12, class 7): only ConvRewriteError subclasses for bad models, and the
caller's ModelProto is never changed."""

from __future__ import annotations

import copy

import onnx
import pytest
from onnx import helper

import convrewrite as cr
from convrewrite.errors import ConvRewriteError
from convrewrite.models import BUILDERS

from .model_cases import conv_model


def _undefined_input() -> onnx.ModelProto:
    model = conv_model(k=7)
    model.graph.node.append(helper.make_node("Add", ["y", "nowhere"], ["z"], name="add"))
    model.graph.output[0].name = "z"
    return model


BAD = {
    "empty ModelProto": onnx.ModelProto,
    "graph without nodes or outputs": lambda: helper.make_model(helper.make_graph([], "g", [], [])),
    "reads an undefined tensor": _undefined_input,
    "opset 99": lambda: conv_model(opset=99),
    "group 0": lambda: conv_model(attrs={"group": 0}, wshape=(4, 4, 3, 3)),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("call", ["rewrite", "check"])
def test_bad_model_raises_a_convrewrite_error(case, call):
    with pytest.raises(ConvRewriteError):
        getattr(cr, call)(BAD[case](), "k210")


def test_not_a_model_raises():
    with pytest.raises(ConvRewriteError):
        cr.rewrite(b"not a model", "k210")


UNCHANGED = {
    "7x7 conv on k210": lambda: conv_model(k=7),
    "legal conv": lambda: conv_model(k=3),
    "demo": BUILDERS["demo_wide"],
    "weights as graph inputs": lambda: conv_model(k=7, initializers_as_inputs=True, ir=3,
                                                  opset=9),
    "outputs without shapes": lambda: _shapeless(conv_model(k=7)),
}


def _shapeless(model: onnx.ModelProto) -> onnx.ModelProto:
    model.graph.output[0].type.tensor_type.ClearField("shape")
    return model


@pytest.mark.parametrize("case", sorted(UNCHANGED))
def test_the_callers_model_is_never_mutated(case):
    model = UNCHANGED[case]()
    before = copy.deepcopy(model).SerializeToString()
    rewritten, report = cr.rewrite(model, "k210")
    assert model.SerializeToString() == before
    cr.check(model, "k210")
    cr.verify(model, rewritten)
    assert model.SerializeToString() == before
    assert report.status in ("ok", "illegal"), report.end_to_end
