"""Long axes (``max_dim``, Ethos-U's Vela 3: no tensor dimension over 65535): the spatial tiler
cuts any axis whose input exceeds it, with the kernel's halo, so every tile conv's input and
output fit. Numbers checked on onnxruntime here; emitted nodes re-checked against the target."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convrewrite as cr
from convrewrite.conv import ConvSpec
from convrewrite.plan.tiling import axis_limits, plan_tiles
from convrewrite.target import load_target
from tests.conv_cases import conv_model, rewrite_legal_and_close


def compare(model, target):
    return rewrite_legal_and_close(model, target, rtol=1e-5, atol=1e-6)


def test_limits_combine_height_width_and_max_dim():
    spec = ConvSpec(name="c", op_type="Conv", in_channels=1, out_channels=1, groups=1,
                    kernel_shape=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(0,) * 4)
    target = load_target({"name": "t", "conv": {"input_width": [4, 512], "max_dim": 300}})
    assert axis_limits(spec, target) == {0: (1, 300), 1: (4, 300)}


# Vela 3's conv rules without its every-op tensor limit (max_tensor_dim): the convs alone.
VELA3_CONVS = {"extends": "ethos-u55-vela3", "name": "vela3-convs", "max_tensor_dim": None}


def test_audio_conv_over_70000_samples_on_vela3():
    model = conv_model(cin=4, cout=4, kernel=(9,), pads=(4, 4), spatial=(70000,))
    out, report = compare(model, VELA3_CONVS)
    assert report.records[0].pass_name == "tiling"
    assert report.records[0].rewrite.startswith("2 tiles on axis 2")


def test_the_model_interface_over_vela3s_limit_is_named():
    """On Vela 3 itself every op's tensors are limited too: the convs are tiled, but the model's
    own 70000-sample input and output stay over 65535, and the ops reading and writing them
    are named (exit 3), the model's interface given as the reason."""
    model = conv_model(cin=4, cout=4, kernel=(9,), pads=(4, 4), spatial=(70000,))
    out, report = cr.rewrite(model, "ethos-u55-vela3")
    assert report.status != "ok"
    assert report.records[0].pass_name == "tiling"
    assert {v.rule for r in report.remaining for v in r.violations} == {"max_tensor_dim"}
    reasons = {why for r in report.remaining for why in r.reasons}
    assert "x is the model's own input: no rewrite narrows the model's interface" in reasons
    assert "y is the model's own output: no rewrite narrows the model's interface" in reasons


def test_wide_map_tiles_every_conv_within_max_dim():
    spec_target = {"name": "t", "conv": {"max_dim": 40}}
    model = conv_model(cin=3, cout=3, kernel=(3, 3), strides=(1, 2), pads=(1,) * 4,
                       spatial=(50, 130))
    out, _ = compare(model, spec_target)
    assert cr.check(out, spec_target).convs_checked >= 6


def test_window_wider_than_max_dim_declines():
    spec = ConvSpec(name="c", op_type="Conv", in_channels=1, out_channels=1, groups=1,
                    kernel_shape=(9,), strides=(1,), dilations=(1,), pads=(0, 0),
                    input_shape=(1, 1, 100))
    plan = plan_tiles(spec, load_target({"name": "t", "conv": {"max_dim": 8}}), (0, 0))
    assert "does not fit" in plan.reason


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(20, 60),
       st.integers(8, 16), st.sampled_from([1, 2]))
def test_long_axis_property(k, stride, pad, size, cap, rank):
    model = conv_model(cin=2, cout=3, kernel=(k,) * rank, strides=(stride,) * rank,
                       pads=(pad,) * (2 * rank), spatial=(size,) * rank)
    compare(model, {"name": "t", "conv": {"max_dim": cap}})
