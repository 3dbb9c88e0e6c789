"""A tensor whose element type onnx does not know (a mutated byte: a weight of type 35), anywhere
in the model, is a one-line bad-input error (exit 2), never onnx-graphsurgeon's KeyError (exit 4)."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

import convrewrite as cr
from convrewrite.errors import BadInputError
from tests.conv_cases import conv_model
from tests.robustness.harness import run_cli, write_model

UNKNOWN = 35


def _weight(model):
    model.graph.initializer[0].data_type = UNKNOWN
    return model


def _input(model):
    model.graph.input[0].type.tensor_type.elem_type = UNKNOWN
    return model


def _constant(model):
    value = helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0])
    value.data_type = UNKNOWN
    model.graph.node.append(helper.make_node("Constant", [], ["unused"], name="k", value=value))
    return model


def _in_branch(model):
    body_init = helper.make_tensor("w_in", TensorProto.FLOAT, [1], [1.0])
    body_init.data_type = UNKNOWN
    then = helper.make_graph([helper.make_node("Identity", ["w_in"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
                             [body_init])
    other = helper.make_graph([helper.make_node("Identity", ["w_in2"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
                              [helper.make_tensor("w_in2", TensorProto.FLOAT, [1], [1.0])])
    model.graph.initializer.append(helper.make_tensor("cond", TensorProto.BOOL, [], [True]))
    model.graph.node.append(helper.make_node("If", ["cond"], ["branch_out"], name="branch",
                                             then_branch=then, else_branch=other))
    return model


CASES = {"weight": (_weight, "element type 35"), "graph input": (_input, "'x'"),
         "Constant attribute": (_constant, "Constant k's attribute value"),
         "If branch initializer": (_in_branch, "'w_in'")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_api_names_the_tensor(case):
    mutate, needle = CASES[case]
    model = mutate(conv_model(cin=8, cout=8, spatial=(6, 6)))
    with pytest.raises(BadInputError, match="does not know") as info:
        cr.rewrite(model, {"name": "t", "conv": {"max_in_channels": 4}})
    assert needle in str(info.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_exit_2(tmp_path, case):
    mutate, _ = CASES[case]
    write_model(tmp_path, "in.onnx", mutate(conv_model(cin=8, cout=8, spatial=(6, 6))))
    before = (tmp_path / "in.onnx").read_bytes()
    r = run_cli(["in.onnx", "--target", "generic", "-o", "out.onnx"], tmp_path)
    # ours, or onnx.checker's own line where it catches the type first (a subgraph, a Constant)
    assert r.code == 2 and "35" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert (tmp_path / "in.onnx").read_bytes() == before and not (tmp_path / "out.onnx").exists()
