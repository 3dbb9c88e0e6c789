"""Shifts: our Shift op and one-hot depthwise convs take the cheapest legal form, exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convrewrite.decline import Decline
from convrewrite.ops.shift import (one_hot_depthwise_weight, one_hot_offsets, shift_offsets,
                                   shift_reference)
from convrewrite.plan.shift import FoldSite, one_hot_geometry, plan_shift, shift_runs
from convrewrite.target import load_target
from tests.conv_cases import run
from tests.passes.variant_cases import ops_of, rewrite_and_compare, shift_then_pointwise

ANY = {"name": "any"}
NO_DEPTHWISE = {"name": "dense", "conv": {"groups": ["regular"]}}
CONVS_ONLY = {"name": "convs", "conv": {"groups": ["regular"]}, "ops": ["Conv", "Relu"]}


def test_paper_assignment_even_groups_and_unshifted_remainder():
    offsets = shift_offsets(20, 3)
    assert offsets[:2].tolist() == [[-1, -1]] * 2 and offsets[16:18].tolist() == [[1, 1]] * 2
    assert offsets[18:].tolist() == [[0, 0]] * 2           # 20 mod 9 = 2 stay put
    assert len(shift_runs(offsets)) == 10                  # 9 directions + the remainder
    assert one_hot_geometry(shift_offsets(27, 3, 2)) == ((3, 3), (2, 2))


def test_reference_moves_pixels_and_fills_zeros():
    x = np.arange(2 * 9 * 4 * 4, dtype=np.float32).reshape(2, 9, 4, 4) + 1
    y = shift_reference(x, shift_offsets(9, 3))
    assert y[0, 0, 1, 1] == x[0, 0, 0, 0] and y[0, 0, 0, 0] == 0       # (dy, dx) = (-1, -1)
    assert np.array_equal(y[:, 4], x[:, 4])                            # centre


def test_one_hot_round_trip():
    offsets = shift_offsets(18, 5, 2)
    weight = one_hot_depthwise_weight(offsets, 5, 2)
    assert np.array_equal(one_hot_offsets(weight, (4, 4), (2, 2)), offsets)
    weight[0, 0, 0, 0] = 0.5
    assert one_hot_offsets(weight, (4, 4), (2, 2)) is None


def test_cost_model_choices():
    offsets = shift_offsets(64, 3)
    auto = load_target(ANY)
    # onnxruntime's depthwise 3x3 kernel keeps up with the copies (benchmarks/variants.py)
    assert plan_shift(offsets, (56, 56), auto, None, None).form == "depthwise"
    assert plan_shift(offsets, (56, 56), load_target(NO_DEPTHWISE), None, None).form == "slice_pad"
    fold = FoldSite(out_channels=16, pixels_out=16)
    assert plan_shift(offsets, (4, 4), load_target(CONVS_ONLY), fold, None).form == "fold"
    assert isinstance(plan_shift(offsets, (4, 4), load_target(CONVS_ONLY), None, None), Decline)
    forced = load_target({"name": "f", "rewrite": {"shift_form": "depthwise"}})
    assert plan_shift(offsets, (56, 56), forced, None, None).form == "depthwise"
    assert "already" in plan_shift(offsets, (56, 56), forced, None, "depthwise").reason


@pytest.mark.parametrize("form", ["op", "depthwise"])
def test_shift_becomes_slice_pad(form):
    model = shift_then_pointwise(192, 64, (32, 32), form=form)    # a wide 1x1: folding costs
    out, report = rewrite_and_compare(model, NO_DEPTHWISE, atol=0)
    assert "Shift" not in ops_of(out) and ops_of(out).count("Conv") == 1
    assert report.records[0].rewrite.startswith("shift as slice_pad")
    assert report.records[0].verify["bit_exact"]


def test_shift_op_becomes_depthwise_when_copies_are_not_available():
    target = {"name": "dw", "ops": ["Conv", "Relu"]}
    model = shift_then_pointwise(64, 64, (32, 32), form="op")
    out, report = rewrite_and_compare(model, target, atol=0)
    assert ops_of(out).count("Conv") == 2 and "depthwise" in report.records[0].rewrite


def test_shift_folds_into_the_pointwise_conv_on_a_dense_only_engine():
    out, report = rewrite_and_compare(shift_then_pointwise(form="op", dilation=2), CONVS_ONLY)
    assert ops_of(out) == ["Relu", "Conv"]
    conv = out.graph.node[1]
    assert {a.name: list(a.ints) for a in conv.attribute}["dilations"] == [2, 2]
    assert report.records[0].nodes_before == 2 and report.records[0].nodes_after == 1


def test_shift_op_with_no_legal_form_is_reported_not_kept():
    import convrewrite as cr
    model = shift_then_pointwise(form="op")
    _, report = cr.rewrite(model, {"name": "none", "conv": {"groups": ["grouped"]}, "ops": ["Relu"]})
    assert report.status == "illegal"
    assert any(r.node == "shift" and "no legal form" in r.reasons[0] for r in report.remaining)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channels=st.integers(1, 40), kernel=st.sampled_from([1, 3, 5]), dilation=st.integers(1, 3),
       h=st.integers(1, 9), w=st.integers(1, 9),
       target=st.sampled_from([ANY, NO_DEPTHWISE, CONVS_ONLY, {"name": "dw", "ops": ["Conv", "Relu"]}]))
def test_property_every_form_equals_the_shift(channels, kernel, dilation, h, w, target):
    model = shift_then_pointwise(channels, 5, (h, w), kernel, dilation, form="op")
    rewrite_and_compare(model, target)


def test_reference_matches_onnxruntime_one_hot_depthwise():
    from onnx import helper, numpy_helper
    x = np.random.default_rng(1).standard_normal((2, 20, 6, 7)).astype(np.float32)
    for d in (1, 2):
        offsets = shift_offsets(20, 3, d)
        graph = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], group=20, pads=[d] * 4, dilations=[d, d])],
            "g", [helper.make_tensor_value_info("x", 1, x.shape)],
            [helper.make_tensor_value_info("y", 1, None)],
            [numpy_helper.from_array(one_hot_depthwise_weight(offsets, 3, d), "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        assert np.array_equal(run(model, {"x": x})[0], shift_reference(x, offsets))


def pad_slice_model(channels=18, size=(6, 7), out=8):
    """ShiftNet as PyTorch code writes it: pad once, slice a window per channel group, concat."""
    from onnx import helper
    from convrewrite.ops.shift import shift_offsets
    from tests.passes.variant_cases import model_of
    rng = np.random.default_rng(5)
    offsets = shift_offsets(channels, 3)
    inits = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
             "W": rng.standard_normal((out, channels, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="pre"),
             helper.make_node("Pad", ["r", "pads"], ["p"], name="pad")]
    parts, c = [], 0
    while c < channels:
        stop = c
        while stop < channels and (offsets[stop] == offsets[c]).all():
            stop += 1
        dy, dx = offsets[c]
        name = f"win{c}"
        inits[f"{name}.s"] = np.array([c, 1 + dy, 1 + dx], np.int64)
        inits[f"{name}.e"] = np.array([stop, 1 + dy + size[0], 1 + dx + size[1]], np.int64)
        inits[f"{name}.a"] = np.array([1, 2, 3], np.int64)
        nodes.append(helper.make_node("Slice", ["p", f"{name}.s", f"{name}.e", f"{name}.a"],
                                      [name], name=name))
        parts.append(name)
        c = stop
    nodes += [helper.make_node("Concat", parts, ["s"], name="cat", axis=1),
              helper.make_node("Conv", ["s", "W"], ["y"], name="pointwise", kernel_shape=[1, 1])]
    return model_of(nodes, inits, [1, channels, *size])


def test_pad_slice_shift_is_recognised_and_refolded_where_copies_are_missing():
    import convrewrite as cr
    _, report = cr.rewrite(pad_slice_model(192, (32, 32), 64), NO_DEPTHWISE)   # folding costs
    assert not report.records and any("Pad and Slices" in r for r in report.recognised)
    model = pad_slice_model()
    out, report = rewrite_and_compare(model, CONVS_ONLY)
    assert ops_of(out) == ["Relu", "Conv"]
    assert report.records[0].nodes_before == 12         # Pad, 9 Slices, Concat, the 1x1
    out, _ = rewrite_and_compare(pad_slice_model(192, (32, 32), 64),
                                 {"name": "dw", "ops": ["Conv", "Relu"]}, atol=0)
    assert ops_of(out) == ["Relu", "Conv", "Conv"]          # one-hot depthwise, then the 1x1


def test_pad_slice_shift_whose_padded_map_is_read_elsewhere_is_left_whole():
    import convrewrite as cr
    from onnx import helper
    model = pad_slice_model()
    model.graph.node.append(helper.make_node("ReduceMax", ["p"], ["side"], name="side",
                                             keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("side", 1, None))
    out, report = cr.rewrite(model, CONVS_ONLY)
    assert "Pad" in ops_of(out) and not any(r.pass_name == "shift" for r in report.records)
