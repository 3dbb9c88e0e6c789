"""The quantized weight-sum rule: exact sums, per-chunk scales, and the channel split that fixes
a violation (numerically verified)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

import convrewrite as cr
from convrewrite import weight_sum
from convrewrite.gs_graph import to_graph
from convrewrite.build.onnx_read import spec_of
from tests.conv_cases import conv_model

VELA_LIMIT = 127 * 65536


def test_equal_magnitudes_sum_to_127_per_weight():
    w = np.where(np.random.default_rng(0).random((4, 10, 3, 3)) < 0.5, -0.2, 0.2)
    assert weight_sum.largest(w) == 127 * 10 * 9


def test_each_output_channel_has_its_own_scale():
    w = np.ones((2, 4, 1, 1))
    w[1] *= 1000.0                          # channel 1's scale is 1000x channel 0's
    w[1, 0] = 2000.0                        # ... and its peak halves the others
    assert list(weight_sum.per_output_channel(w)) == [4 * 127, 127 + 3 * 64]


def test_transposed_and_grouped_layouts():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 4, 3, 3))    # ConvTranspose [Cin, Cout/G, k, k], G = 2
    per_group = w.reshape(2, 3, 4, 9)
    as_conv = per_group.transpose(0, 2, 1, 3).reshape(8, 3, 3, 3)  # [Cout, Cin/G, k, k]
    assert weight_sum.largest(w, transposed=True, groups=2) == weight_sum.largest(as_conv)


def test_quantized_weights_use_their_integers():
    q = np.array([[[[100]], [[-27]]], [[[5]], [[0]]]], dtype=np.int8)
    assert weight_sum.largest(q) == 127
    assert weight_sum.largest(q, zero_point=np.array([1, 1])) == 99 + 28


def test_a_chunk_is_quantized_at_its_own_scale():
    # One large weight in input channel 0 shrinks every other |q| of the whole channel; the
    # chunk without it is quantized at its own scale and sums to more than its share.
    w = np.ones((1, 8, 1, 1))
    w[0, 0] = 127.0
    assert weight_sum.largest(w) == 127 + 7
    assert weight_sum.largest(w[:, 4:]) == 4 * 127


@pytest.mark.parametrize("form", ["initializer", "qdq_channel"])
def test_spec_carries_the_weight_sum(form):
    model = conv_model(cin=16, cout=8, weight_form=form)
    conv = next(n for n in to_graph(model).nodes if n.op == "Conv")
    spec = spec_of(conv)
    assert spec.weight_sum is not None and 0 < spec.weight_sum <= 127 * 16 * 9


def test_channel_split_fixes_a_weight_sum_violation():
    model = conv_model(cin=64, cout=8, kernel=(3, 3), spatial=(6, 6), pads=(1, 1, 1, 1))
    target = {"name": "tight", "conv": {"max_weight_sum": 127 * 100}}
    before = cr.check(model, target)
    assert [v.rule for r in before.remaining for v in r.violations] == ["max_weight_sum"]
    rewritten, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    assert report.records[0].pass_name == "channel_split"
    for node in to_graph(rewritten).nodes:
        if node.op == "Conv":
            assert spec_of(node).weight_sum <= 127 * 100


def test_the_split_repeats_until_every_chunk_fits():
    """Chunks quantized at a finer scale than the whole channel sum to more: the fixpoint splits
    such a sub-conv again, on its own exact sum."""
    model = conv_model(cin=64, cout=4, kernel=(1, 1), spatial=(4, 4), pads=(0, 0, 0, 0))
    weights = model.graph.initializer[0]
    w = np.ones((4, 64, 1, 1), dtype=np.float32)
    w[:, 0] = 100.0                     # the whole channel: 127 + 63 * 1 = 190
    weights.CopyFrom(numpy_helper.from_array(w, weights.name))
    target = {"name": "tight", "conv": {"max_weight_sum": 150}}
    rewritten, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    sums = [spec_of(n).weight_sum for n in to_graph(rewritten).nodes if n.op == "Conv"]
    # the all-ones channels alone quantize to 127 each: one per chunk
    assert max(sums) <= 150 and len(sums) >= 33


def test_remembered_sum_is_per_array_and_forgotten_with_it():
    w = np.ones((2, 3, 3, 3), dtype=np.float32)
    assert weight_sum.remembered_largest(w) == weight_sum.largest(w) == 127 * 27
    other = w.copy()
    other[:, 0, 0, 0] = 0.0             # another array: its own sum, never the first one's
    assert weight_sum.remembered_largest(other) == 127 * 26
    assert weight_sum.remembered_largest(w, zero_point=np.array([0])) == 127 * 27
    remembered = len(weight_sum._REMEMBERED)
    del w, other
    assert len(weight_sum._REMEMBERED) == remembered - 3
