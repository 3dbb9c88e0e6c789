"""The quantized weight-sum rule: exact sums, per-chunk scales, and the channel split that fixes
a violation (numerically verified)."""

from __future__ import annotations

import numpy as np
import pytest

import convrewrite as cr
from convrewrite import weight_sum
from convrewrite.graph import to_graph
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


def test_chunk_limit_quantizes_each_chunk_alone():
    # One large weight in input channel 0 shrinks every other |q| of the whole channel; in its own
    # chunk the others are quantized at their own scale and sum to more.
    w = np.ones((1, 8, 1, 1))
    w[0, 0] = 127.0
    assert weight_sum.largest(w) == 127 + 7
    assert weight_sum.input_chunk_limit(w, 127 + 7) == 8
    # 134 > 130; in halves [127, 1, 1, 1] sums to 130, but [1, 1, 1, 1] alone is quantized at
    # its own scale to 4 * 127: only one channel per chunk fits.
    assert weight_sum.input_chunk_limit(w, 130) == 1
    assert weight_sum.input_chunk_limit(np.ones((1, 8, 1, 1)), 600) == 4
    assert weight_sum.input_chunk_limit(np.ones((1, 1, 3, 3)), 8 * 127) is None


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
