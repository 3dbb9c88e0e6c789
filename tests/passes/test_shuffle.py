"""Channel shuffles through 5-D tensors disappear on 4-D targets: folded, Gathered or a one-hot
conv, found by probing whatever the exporter wrote; exact on onnxruntime."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convrewrite.models.builder import GraphBuilder
from convrewrite.models.variants import channel_shuffle, shufflenet_v2, split_shuffle
from convrewrite.plan.selection import plan_selection
from convrewrite.target import load_target
from tests.passes.variant_cases import ops_of, rewrite_and_compare

FOUR_D = {"name": "4d", "max_tensor_rank": 4}
NO_GATHER = {"name": "no-gather", "max_tensor_rank": 4,
             "ops": ["Conv", "Relu", "Concat", "Split", "Reshape", "Shape", "Identity"]}


def shuffle_model(channels=12, groups=3, dynamic=False, consumer="conv", size=(5, 6)):
    g = GraphBuilder("shuffle", seed=1)
    x = g.relu(g.input("input", channels, size, 1), "pre")
    y = channel_shuffle(g, x, groups, "shuffle", dynamic=dynamic)
    if consumer == "conv":
        y = g.conv(y, 7, 3, name="after")
    elif consumer == "depthwise":
        y = g.conv(y, channels, 3, groups=channels, name="after")
    g.output(y, "out")
    return g.build()


@pytest.mark.parametrize("dynamic", [False, True])
def test_permutation_folds_into_a_dense_conv(dynamic):
    out, report = rewrite_and_compare(shuffle_model(dynamic=dynamic), FOUR_D, atol=1e-6)
    assert "Transpose" not in ops_of(out) and "Gather" not in ops_of(out)
    assert ops_of(out).count("Conv") == 1
    assert "folded" in report.records[0].rewrite and report.records[0].verify["passed"]


def test_depthwise_consumer_gets_a_gather():
    out, report = rewrite_and_compare(shuffle_model(consumer="depthwise"), FOUR_D, atol=0)
    assert "Transpose" not in ops_of(out) and ops_of(out).count("Gather") == 1


def test_without_gather_a_one_hot_conv_permutes():
    out, _ = rewrite_and_compare(shuffle_model(consumer="depthwise"), NO_GATHER, atol=0)
    assert "Gather" not in ops_of(out) and ops_of(out).count("Conv") == 2


def test_graph_output_shuffle_is_gathered():
    out, _ = rewrite_and_compare(shuffle_model(consumer="none"), FOUR_D, atol=0)
    assert "Gather" in ops_of(out)


def test_split_style_shuffle_two_outputs():
    g = GraphBuilder("split_shuffle", seed=2)
    x = g.relu(g.input("input", 16, (4, 4), 1), "pre")
    a, b = split_shuffle(g, x, "shuffle")
    g.output(g.concat([g.conv(a, 4, 1, name="ca"), g.relu(b, "rb")], "cat"), "out")
    out, report = rewrite_and_compare(g.build(), FOUR_D, atol=1e-6)
    assert "Transpose" not in ops_of(out)
    assert len(report.records[0].more_outputs) == 1           # both outputs checked locally


def test_legal_shuffles_are_left_alone():
    out, report = rewrite_and_compare(shuffle_model(), {"name": "5d ok"}, atol=0)
    assert "Transpose" in ops_of(out) and not report.records


def test_selection_cost_prefers_fold_for_permutations_and_gather_for_costly_selections():
    t = load_target(FOUR_D)
    assert plan_selection(64, 64, (28, 28), 0, t).form == "fold"
    assert plan_selection(64, 128, (28, 28), 64 * 64 * 784, t).form == "gather"
    assert plan_selection(64, 64, (28, 28), None, t).form == "gather"


@pytest.mark.parametrize("style", ["static", "dynamic", "split"])
def test_shufflenet_v2_loses_every_5d_tensor(style):
    model = shufflenet_v2(image_size=32, widths=(8, 16, 32, 64, 64), repeats=(2, 2, 2),
                          num_classes=10, shuffle=style)
    out, report = rewrite_and_compare(model, FOUR_D, atol=1e-6)
    assert "Transpose" not in ops_of(out)
    assert all(r.verify["passed"] for r in report.records)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.integers(2, 4), per_group=st.integers(1, 5), dynamic=st.booleans(),
       consumer=st.sampled_from(["conv", "depthwise", "none"]),
       target=st.sampled_from([FOUR_D, NO_GATHER, {"name": "no-transpose", "ops": [
           "Conv", "Relu", "Gather", "Reshape", "Identity", "Shape", "Concat", "Div"]}]))
def test_property_shuffles_removed_exactly(groups, per_group, dynamic, consumer, target):
    model = shuffle_model(groups * per_group, groups, dynamic, consumer, (3, 4))
    out, _ = rewrite_and_compare(model, target, atol=1e-6)
    assert "Transpose" not in ops_of(out)


def test_qdq_shufflenet_keeps_its_quantization_exactly(tmp_path):
    """onnxruntime's QDQ quantizer wraps every Reshape/Transpose in Q/DQ on one grid: the
    shuffle is still a pure selection, and the Gathers that replace it are requantized."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    import convrewrite as cr

    model = shufflenet_v2(image_size=32, widths=(8, 16, 32, 64, 64), repeats=(2, 2, 2),
                          num_classes=10, shuffle="dynamic")
    onnx.save(model, tmp_path / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"input": np.random.default_rng(i).uniform(
                -1, 1, (1, 3, 32, 32)).astype(np.float32)} for i in range(2)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    quantized = onnx.load(tmp_path / "q.onnx")
    out, report = cr.rewrite(quantized, FOUR_D)
    assert report.status == "ok", report.render()
    assert report.end_to_end["bit_exact"]
    assert "Transpose" not in ops_of(out)
    readers = {i: n.op_type for n in out.graph.node for i in n.input}
    gathers = [n for n in out.graph.node if n.op_type == "Gather" and
               any(g.op_type == "DequantizeLinear" and g.output[0] == n.input[0]
                   for g in out.graph.node)]
    assert gathers and all(readers[g.output[0]] == "QuantizeLinear" for g in gathers)
