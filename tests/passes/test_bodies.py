"""passes.bodies: a conv in a Loop body rewritten through a standalone model (outer Constant
copied in and not back, carried state typed from what enters the loop, names unique in the whole
model, records verified on the standalone models), and the bodies it leaves alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convrewrite.passes.bodies import rewrite_bodies
from convrewrite.pipeline import run_pipeline
from convrewrite.target import load_target
from convrewrite.verify import make_inputs, run

K210 = load_target("k210")


def loop_model(k: int = 7, after: bool = False) -> onnx.ModelProto:
    """Two iterations of ``v = conv(v)`` (k x k, weight from an outer Constant node); the body
    declares its carried input without a shape, as exporters often do. ``after``: the main
    graph applies a conv of the same name once more, so both rewrites want the same names."""
    weight = np.random.default_rng(0).standard_normal((4, 4, k, k)).astype(np.float32) / k
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"], name="keep"),
         helper.make_node("Conv", ["v_in", "Wc"], ["v_out"], name="step_conv",
                          pads=[k // 2] * 4)],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Constant", [], ["Wc"], name="weight",
                              value=numpy_helper.from_array(weight)),
             helper.make_node("Loop", ["M", "cond", "x"], ["v" if after else "y"], name="loop",
                              body=body)]
    if after:
        nodes.append(helper.make_node("Conv", ["v", "Wc"], ["y"], name="step_conv",
                                      pads=[k // 2] * 4))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.array(2, np.int64), "M"),
         numpy_helper.from_array(np.array(True), "cond")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _names(model: onnx.ModelProto) -> list[str]:
    """Every node name and every tensor a node writes or an initializer holds, in every scope."""
    out: list[str] = []

    def walk(graph):
        out.extend(t.name for t in graph.initializer)
        for node in graph.node:
            out.append(node.name)
            out.extend(node.output)
            for a in node.attribute:
                for sub in ([a.g] if a.type == a.GRAPH else a.graphs):
                    walk(sub)
    walk(model.graph)
    return out


@pytest.mark.parametrize("after", [False, True])
def test_loop_body_is_rewritten_and_verified(after):
    model = loop_model(after=after)
    rewritten, result = run_pipeline(model, K210, feeds=lambda: make_inputs(model))
    assert result.records and all(r.verify["passed"] for r in result.records)
    inner = "loop/body/step_conv_1" if after else "loop/body/step_conv"
    assert {inner} | ({"step_conv"} if after else set()) <= {r.node for r in result.records}
    assert ("loop/body: convs renamed to be unique in the model: step_conv -> step_conv_1"
            in result.notes) == after
    assert result.end_to_end["passed"]
    assert result.remaining == []
    onnx.checker.check_model(rewritten, full_check=True)
    (loop,) = [n for n in rewritten.graph.node if n.op_type == "Loop"]
    body = loop.attribute[0].g
    assert "Wc" not in {t.name for t in body.initializer}       # read from outside, as before
    assert {n.op_type for n in body.node} >= {"Conv", "Slice"}
    names = _names(rewritten)
    assert len(names) == len(set(names))
    x = make_inputs(model, seed=3)
    np.testing.assert_allclose(run(rewritten, x)["y"], run(model, x)["y"], rtol=1e-4, atol=1e-4)


def test_a_legal_body_is_left_alone():
    model = loop_model(k=3)
    rewritten, result = run_pipeline(model, K210, feeds=lambda: make_inputs(model))
    assert rewritten is model and result.records == [] and result.bodies == []


def _unreachable(*_):
    raise AssertionError("the body should not be rewritten")


def test_a_body_reading_an_untyped_tensor_is_left_alone():
    """An outer tensor of unknown type cannot be a typed input of the standalone body."""
    model = loop_model()
    model.graph.node[-1].input[2] = "u"
    model.graph.node.insert(0, helper.make_node("Mystery", ["x"], ["u"], name="m",
                                                domain="some.dom"))
    model.graph.node[-1].attribute[0].g.input[2].type.tensor_type.elem_type = 0
    same, bodies, notes = rewrite_bodies(model, _unreachable)
    assert same is model and bodies == []
    assert notes == ["loop/body: not rewritten, a tensor it reads has no known type"]


def test_a_rewrite_changing_the_interface_is_refused():
    model = loop_model()

    def renaming(standalone, names):
        out = onnx.ModelProto()
        out.CopyFrom(standalone)
        out.graph.output[1].name = "renamed"
        return out, ["a record"], []

    before = model.SerializeToString()
    same, bodies, notes = rewrite_bodies(model, renaming)
    assert same is model and bodies == [] and model.SerializeToString() == before
    assert notes == ["loop/body: not rewritten, the rewrite would change its interface"]
