"""Limits on every op's tensors (``max_tensor_batch``, ``max_tensor_dim``: Vela 3 checks both on
every NPU op): legality names the ops that break them (a batch-2 Relu next to a batch-split conv
was reported ``ok`` before), the piecewise pass cuts elementwise ops into pieces the target takes
(the pieces of the conv's batch Split where one follows, so chunk fusion joins the regions), and
what stays is named with its reason (the model's own input or output). Every rewrite is checked
on onnxruntime, bit for bit: elementwise ops on pieces and a batch split are exact."""

from __future__ import annotations

import numpy as np
import pytest
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from tests.conv_cases import op_count, run

BATCH_1 = {"name": "batch-1-everywhere", "max_tensor_batch": 1, "conv": {"max_batch": 1}}


def pointwise_then_conv(batch: int, chain: list[tuple[str, tuple | None]], cin: int = 4,
                        size=(5, 6), seed: int = 0, conv: bool = True) -> onnx.ModelProto:
    """x -> each (op, constant shape or None) of ``chain`` -> a 3x3 conv (or nothing) -> y."""
    rng = np.random.default_rng(seed)
    shape = [batch, cin, *size]
    nodes, inits, prev = [], [], "x"
    for i, (op, const) in enumerate(chain):
        inputs = [prev]
        if const is not None:
            inits.append(numpy_helper.from_array(rng.uniform(-1, 1, const).astype(np.float32),
                                                 f"c{i}"))
            inputs.append(f"c{i}")
        nodes.append(helper.make_node(op, inputs, [f"t{i}"], name=f"{op.lower()}{i}"))
        prev = f"t{i}"
    if conv:
        inits.append(numpy_helper.from_array(rng.uniform(-1, 1, (3, cin, 3, 3))
                                             .astype(np.float32), "w"))
        nodes.append(helper.make_node("Conv", [prev, "w"], ["y"], name="conv", pads=[1] * 4))
        out_shape = [batch, 3, *size]
    else:
        nodes[-1].output[0] = "y"
        out_shape = shape
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def assert_same(model, out, batch, size=(5, 6), cin=4):
    x = np.random.default_rng(3).uniform(-1, 1, (batch, cin, *size)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])


def test_a_batch_two_relu_is_named_not_passed():
    """Check-only: the conv breaks conv.max_batch, and the Relu before it max_tensor_batch --
    before, legality looked at convs alone and never named the Relu."""
    report = cr.check(pointwise_then_conv(2, [("Relu", None)]), BATCH_1)
    broken = {r.node: [v.rule for v in r.violations] for r in report.remaining}
    assert broken == {"relu0": ["max_tensor_batch"], "conv": ["max_batch"]}
    relu = next(r for r in report.remaining if r.node == "relu0")
    assert relu.reasons == ["the piecewise pass cuts it (not run by --check-only)"]
    assert "batch 2" in relu.violations[0].message


def test_batch_split_region_encloses_the_relu():
    model = pointwise_then_conv(2, [("Relu", None)])
    out, report = cr.rewrite(model, BATCH_1)
    assert report.status == "ok", report.render()
    assert [r.pass_name for r in report.records] == ["batch", "piecewise"]
    assert all(r.verify["bit_exact"] for r in report.records)
    # one Split of x, a Relu and a conv per item, one Concat: the Concat -> Split between the
    # Relu pieces and the conv pieces is fused away
    assert [n.op_type for n in out.graph.node] == ["Split", "Relu", "Relu", "Conv", "Conv",
                                                   "Concat"]
    assert not cr.check(out, BATCH_1).remaining
    assert_same(model, out, 2)


def test_a_chain_with_constants_and_broadcasts_is_cut_exactly():
    """Add of a per-item constant (cut with the pieces), Mul of a per-channel one (shared),
    Sigmoid: each op in 3 pieces of batch 1; nothing is left over the limit."""
    model = pointwise_then_conv(3, [("Add", (3, 1, 1, 1)), ("Mul", (1, 4, 1, 1)),
                                    ("Sigmoid", None)])
    out, report = cr.rewrite(model, BATCH_1)
    assert report.status == "ok", report.render()
    assert [r.pass_name for r in report.records].count("piecewise") == 3
    assert op_count(out, "Split") == 1 and op_count(out, "Concat") == 1
    assert op_count(out, "Add") == op_count(out, "Mul") == op_count(out, "Sigmoid") == 3
    assert_same(model, out, 3)


def test_pointwise_ops_after_the_conv_are_cut_too():
    """A Relu after the conv reads the batch Concat: it runs per piece and the model's batch-2
    output is a Concat of batch-1 pieces (the engine limits what an op reads)."""
    model = pointwise_then_conv(2, [("Relu", None)])
    graph = model.graph
    graph.node[-1].output[0] = "z"
    graph.node.append(helper.make_node("Tanh", ["z"], ["y"], name="tanh"))
    out, report = cr.rewrite(model, BATCH_1)
    assert report.status == "ok", report.render()
    assert op_count(out, "Tanh") == 2
    assert not cr.check(out, BATCH_1).remaining
    assert_same(model, out, 2)


def test_an_interface_over_the_limit_is_named_with_its_reason():
    """max_tensor_dim 100 and a 1 x 120 map: the Relu is cut (pieces of 60), but its Split
    reads the model's own input and the Concat at the end writes its output: named as such."""
    target = {"name": "dims-100", "max_tensor_dim": 100, "conv": {"max_dim": 100}}
    model = pointwise_then_conv(1, [("Relu", None)], size=(1, 120), conv=False)
    out, report = cr.rewrite(model, target)
    assert report.status != "ok"
    assert [r.rewrite for r in report.records] == [
        "Relu in 2 pieces of 60 on axis 3 (target: 100), joined by Concat"]
    reasons = {r.op: r.reasons for r in report.remaining}
    assert reasons == {"Split": ["x is the model's own input: no rewrite narrows the model's "
                                 "interface"],
                       "Concat": ["y is the model's own output: no rewrite narrows the model's "
                                  "interface"]}
    assert_same(model, out, 1, size=(1, 120))


def test_targets_without_the_limits_are_left_alone():
    model = pointwise_then_conv(2, [("Relu", None)])
    out, report = cr.rewrite(model, {"name": "conv-batch-only", "conv": {"max_batch": 1}})
    assert [r.pass_name for r in report.records] == ["batch"]
    assert op_count(out, "Relu") == 1


UNARY = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg"]
BINARY = ["Add", "Mul", "Sub", "Max"]


@st.composite
def chains(draw):
    batch = draw(st.integers(2, 5))
    limit = draw(st.integers(1, batch - 1))
    chain = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            chain.append((draw(st.sampled_from(UNARY)), None))
        else:
            const = draw(st.sampled_from([(1,), (4, 1, 1), (batch, 1, 1, 1), (1, 4, 1, 6),
                                          (batch, 4, 5, 6)]))
            chain.append((draw(st.sampled_from(BINARY)), const))
    conv = draw(st.booleans())
    return batch, limit, chain, conv, draw(st.integers(0, 9))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_piecewise_property(case):
    """Any chain of elementwise ops (constants per item, per channel, whole or scalar) before a
    conv or alone, any batch and limit: nothing is left over the limit (the model's input is
    read by a Split, which the limit exempts; its output written by a Concat) and the result
    equals the original bit for bit."""
    batch, limit, chain, conv, seed = case
    model = pointwise_then_conv(batch, chain, seed=seed, conv=conv)
    target = {"name": "batch-limit", "max_tensor_batch": limit, "conv": {"max_batch": limit}}
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    assert not cr.check(out, target).remaining
    assert_same(model, out, batch)


def test_a_5d_op_over_the_batch_runs_on_views_not_5d_pieces():
    """On a rank-4 engine, pieces of a 5-D map would be 5-D tensors the engine cannot hold: the
    op runs whole on a view of at most 3 axes (no batch to limit) between Reshapes, exact."""
    target = {"name": "b1-r4", "max_tensor_batch": 1, "max_tensor_rank": 4}
    model = pointwise_then_conv(2, [("Relu", None), ("Add", (1, 4, 1, 1, 1))], size=(3, 5, 6),
                                conv=False)
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    assert {r.pass_name for r in report.records} == {"piecewise"}
    assert all("views" in r.rewrite for r in report.records)
    assert op_count(out, "Split") == 0 and op_count(out, "Concat") == 0
    assert_same(model, out, 2, size=(3, 5, 6))


def one_op_model(op: str, shape: list, attrs: dict, extra: list | None = None,
                 opset: int = 17) -> onnx.ModelProto:
    """x -> op(x, *extra constants) -> y, shapes inferred."""
    inits = [numpy_helper.from_array(np.asarray(v), f"c{i}") for i, v in enumerate(extra or [])]
    node = helper.make_node(op, ["x", *(t.name for t in inits)], ["y"], name=op.lower(), **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                        None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


BATCH_1_RANK_4 = {"name": "b1-r4", "max_tensor_batch": 1, "max_tensor_rank": 4}
C = 4
PER_ITEM_CASES = [
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]), None),
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), None),
    ("GlobalAveragePool", {}, None),
    ("InstanceNormalization", {}, [np.ones(C, np.float32) * 1.5, np.full(C, 0.25, np.float32)]),
    ("BatchNormalization", {}, [np.full(C, 2.0, np.float32), np.zeros(C, np.float32),
                               np.full(C, 0.5, np.float32), np.full(C, 4.0, np.float32)]),
    ("Pad", dict(mode="reflect"), [np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)]),
    ("LogSoftmax", dict(axis=1), None),
    ("DepthToSpace", dict(blocksize=2), None),
    ("LRN", dict(size=3), None),
]


@pytest.mark.parametrize("op,attrs,extra", PER_ITEM_CASES, ids=[c[0] for c in PER_ITEM_CASES])
def test_an_op_over_the_models_batch_2_input_runs_per_item(op, attrs, extra):
    """Pools, normalisations over the other axes, pads and block moves that leave the batch be:
    each item is computed from itself alone, so on a batch-1 engine the op runs per item of the
    model's own batch-2 input (Split reads any batch), joined by Concat. Bit-exact."""
    model = one_op_model(op, [2, C, 6, 8], attrs, extra)
    assert cr.check(model, BATCH_1_RANK_4).remaining
    out, report = cr.rewrite(model, BATCH_1_RANK_4)
    assert report.status == "ok", report.render()
    (record,) = report.records
    assert record.pass_name == "piecewise" and "2 pieces of 1 on axis 0" in record.rewrite
    x = np.random.default_rng(5).uniform(-1, 1, (2, C, 6, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])


@pytest.mark.parametrize("op,attrs,extra,opset,why", [
    ("Pad", {}, [np.array([1, 0, 1, 1, 0, 0, 1, 1], np.int64)], 17, "pads the batch axis"),
    ("LogSoftmax", dict(axis=0), None, 17, "normalises over the batch"),
    ("BatchNormalization", dict(momentum=0.9), [np.ones(C, np.float32)] * 4, 9,
     "a momentum before opset 14: the reference evaluator takes batch statistics"),
])
def test_an_op_that_mixes_items_is_not_cut(op, attrs, extra, opset, why):
    model = one_op_model(op, [2, C, 6, 8], attrs, extra, opset)
    _, report = cr.rewrite(model, BATCH_1_RANK_4, verify=False)
    assert not report.records, why
