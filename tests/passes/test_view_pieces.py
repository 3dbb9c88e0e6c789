"""Flattened heads joined by a Concat (EfficientDet: each level's 810 x 32 x 32 class map
flattened to 829440, over Vela 3's 65535 on every tensor): view_pieces flattens the map per piece
of channels whose flattened length fits and feeds the pieces to the Concat, so only the Concat's
own output (the model's interface) stays over the limit, named as such. Before, each Flatten was
left with "no lowering cuts a Flatten yet". Bit-exact on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from tests.conv_cases import run


def flattened_heads(maps: list[tuple[int, int, int]], use_reshape=False, tail=False
                    ) -> onnx.ModelProto:
    """x_i [1, c, h, w] -> Flatten (or Reshape [1, -1]) -> one Concat on axis 1 -> y (then a
    Relu when ``tail``: the Concat's output inner)."""
    nodes, inputs, inits = [], [], [numpy_helper.from_array(np.array([1, -1], np.int64), "flat")]
    for i, (c, h, w) in enumerate(maps):
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [1, c, h, w]))
        if use_reshape:
            nodes.append(helper.make_node("Reshape", [f"x{i}", "flat"], [f"f{i}"], name=f"view{i}"))
        else:
            nodes.append(helper.make_node("Flatten", [f"x{i}"], [f"f{i}"], name=f"flatten{i}",
                                          axis=1))
    total = sum(c * h * w for c, h, w in maps)
    nodes.append(helper.make_node("Concat", [f"f{i}" for i in range(len(maps))],
                                  ["j" if tail else "y"], name="join", axis=1))
    if tail:
        nodes.append(helper.make_node("Relu", ["j"], ["y"], name="relu"))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [1, total])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def feeds(maps):
    rng = np.random.default_rng(5)
    return {f"x{i}": rng.uniform(-1, 1, (1, *m)).astype(np.float32) for i, m in enumerate(maps)}


def assert_same(model, out, maps):
    np.testing.assert_array_equal(run(out, feeds(maps))[0], run(model, feeds(maps))[0])


DIMS_50 = {"name": "dims-50", "max_tensor_dim": 50, "conv": {"max_dim": 50}}


def test_flattened_maps_feed_the_concat_in_pieces():
    """Two maps over the limit (120, 60) and one within (24): one record for the Concat, so
    neither view's output is a boundary the other's rewrite removes."""
    maps = [(4, 5, 6), (2, 3, 4), (3, 4, 5)]
    model = flattened_heads(maps)
    out, report = cr.rewrite(model, DIMS_50)
    assert [r.rewrite for r in report.records] == [
        "Flatten in 4 pieces of 30 on axis 1; Flatten in 2 pieces of 20 or 40 on axis 1 "
        "(target: 50), fed to join in place of the whole"]
    assert report.records[0].verify["bit_exact"]
    # only the model's own 204-long output is left, with why
    assert {r.node: r.reasons for r in report.remaining} == {
        "join/pieces": ["y is the model's own output: no rewrite narrows the model's "
                        "interface"]}
    assert_same(model, out, maps)


def test_a_reshape_view_and_an_inner_concat():
    """Reshape [1, -1] cut the same way; where the Concat's output is inner (a Relu reads it),
    the Concat and the Relu still write 144: named, the Flatten is not."""
    maps = [(6, 2, 5)]
    model = flattened_heads(maps, use_reshape=True, tail=True)
    out, report = cr.rewrite(model, DIMS_50)
    assert report.records[0].rewrite.startswith("Reshape in 2 pieces of 30")
    assert "view0" not in {r.node for r in report.remaining}
    assert_same(model, out, maps)


def test_one_item_over_the_limit_is_declined_with_its_reason():
    maps = [(2, 8, 8)]                      # one channel flattens to 64 > 50
    _, report = cr.rewrite(flattened_heads(maps), DIMS_50)
    flatten = next(r for r in report.remaining if r.node == "flatten0")
    assert flatten.reasons == ["view_pieces: one item of input axis 1 is 64 long, over 50"]


@st.composite
def heads(draw):
    maps = [(draw(st.integers(1, 7)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
            for _ in range(draw(st.integers(1, 3)))]
    limit = draw(st.integers(max(max(c, h * w) for c, h, w in maps), 60))
    return maps, limit


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(heads())
def test_view_pieces_property(case):
    """Any maps and limit (at least one channel's length): no Flatten is left over the limit,
    only the model's output where it is longer, and the result is bit-exact."""
    maps, limit = case
    model = flattened_heads(maps)
    target = {"name": "dims", "max_tensor_dim": limit, "conv": {"max_dim": limit}}
    out, report = cr.rewrite(model, target)
    total = sum(c * h * w for c, h, w in maps)
    assert [r.op for r in report.remaining] == (["Concat"] if total > limit else [])
    assert_same(model, out, maps)


def test_a_concat_of_unknown_length_is_bounded_by_its_known_inputs():
    """TorchScript's effdet: one level's map size is not static, so the joined output's extent
    is unknown; the known inputs alone make it at least 144 long, over 50: named (before, an
    unknown extent passed, and after the cut the .ts model was reported ok)."""
    model = flattened_heads([(4, 5, 6)])
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 1, "H", "W"]))
    graph.node.insert(0, helper.make_node("Flatten", ["z"], ["fz"], name="flatten_z", axis=1))
    graph.node[-1].input.append("fz")
    graph.output[0].type.tensor_type.shape.dim[1].dim_param = "T"
    report = cr.check(model, DIMS_50)
    join = next(r for r in report.remaining if r.node == "join")
    assert "at least 120" in join.violations[0].message
