"""ConvTranspose outputs as TFLite's TRANSPOSE_CONV makes them (transposed_valid_shape): the
output_padding moved into the crop (exact), or bias-only rows restored by Pad + Add."""

from __future__ import annotations

import pytest

import convrewrite as cr
from tests.conv_cases import conv_model

TARGET = {"name": "tflite-shapes", "conv": {"transposed_valid_shape": True}}


@pytest.mark.parametrize("kernel, stride, pads, output_padding, bias, how", [
    (3, 2, (1, 1, 1, 1), (1, 1), True, "the same outputs"),     # k3 s2 p1 op1: 2x exactly
    (1, 2, (0, 0, 0, 0), (0, 0), True, "the same outputs"),     # needs op 1, crops one more
    (2, 3, (0, 0, 1, 0), (0, 0), True, "the same outputs"),
    (3, 2, (0, 0, 0, 0), (1, 1), True, "bias-only rows by Pad + bias Add"),
    (3, 2, (0, 0, 0, 0), (1, 1), False, "bias-only rows by Pad"),
])
def test_rewrite_matches_and_is_legal(kernel, stride, pads, output_padding, bias, how):
    model = conv_model(op="ConvTranspose", cin=8, cout=6, kernel=(kernel, kernel),
                       strides=(stride, stride), pads=pads, output_padding=output_padding,
                       bias=bias, spatial=(5, 7))
    assert cr.check(model, TARGET).remaining
    rewritten, report = cr.rewrite(model, TARGET)
    assert report.status == "ok", report.render()
    assert how in report.records[0].rewrite
    assert report.end_to_end["passed"] and report.end_to_end["max_abs"] <= 1e-5
    assert not cr.check(rewritten, TARGET).remaining
