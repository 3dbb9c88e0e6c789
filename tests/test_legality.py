"""Legality rules as pure functions over ConvSpec."""

from __future__ import annotations

from convrewrite.conv import ConvSpec
from convrewrite.conv import effective_pads
from convrewrite.legality import check
from convrewrite.target import load_target


def spec(**kw) -> ConvSpec:
    base = dict(name="c", op_type="Conv", in_channels=64, out_channels=64, groups=1,
                kernel_shape=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1),
                input_shape=(1, 64, 32, 32), output_shape=(1, 64, 32, 32))
    base.update(kw)
    return ConvSpec(**base)


def rules(s: ConvSpec, target) -> set[str]:
    return {v.rule for v in check(s, load_target(target))}


def test_k210_rejects_what_it_should():
    assert rules(spec(), "k210") == set()
    assert rules(spec(in_channels=2048, kernel_shape=(5, 5), pads=(1, 1, 1, 1)), "k210") == {
        "max_in_channels", "kernel_shapes", "same_pad_only"}
    assert rules(spec(kernel_shape=(5, 5), pads=(2, 2, 2, 2)), "k210") == {
        "kernel_shapes", "max_pad"}
    assert "max_stride" in rules(spec(strides=(2, 2)), "k210")
    assert "max_dilation" in rules(spec(dilations=(2, 2), pads=(2, 2, 2, 2)), "k210")
    assert "input_width" in rules(spec(input_shape=(1, 64, 32, 600)), "k210")
    assert "input_height" in rules(spec(input_shape=(1, 64, 2, 32)), "k210")
    assert "transposed" in rules(spec(op_type="ConvTranspose"), "k210")
    assert "spatial_ranks" in rules(spec(kernel_shape=(3,), strides=(1,), dilations=(1,),
                                         pads=(1, 1), input_shape=(1, 64, 32)), "k210")
    assert "groups" in rules(spec(groups=4), "k210")            # grouped, not depthwise
    assert "groups" not in rules(spec(groups=64), "k210")       # depthwise is native


def test_ethos_u55_vela3_rules():
    u55 = "ethos-u55-vela3"
    assert "max_stride" in rules(spec(strides=(4, 4)), u55)
    assert "max_dilated_kernel_height" in rules(
        spec(kernel_shape=(3, 3), dilations=(40, 1)), u55)
    assert "max_dilated_kernel_area" in rules(
        spec(kernel_shape=(65, 65), pads=(0, 0, 0, 0)), u55)
    assert "depth_multiplier_needs_single_input" in rules(
        spec(groups=64, out_channels=128), u55)
    assert "depth_multiplier_needs_single_input" not in rules(
        spec(groups=1, in_channels=1, out_channels=8), u55)
    assert "max_batch" in rules(spec(input_shape=(2, 64, 32, 32)), u55)
    assert "transposed_strides" in rules(spec(op_type="ConvTranspose", strides=(3, 3)), u55)


def test_ethos_u55_rules_are_vela5s():
    """Vela 5's default core takes what Vela 3 did not (batch, dilated height, multipliers)."""
    assert rules(spec(input_shape=(2, 64, 32, 32)), "ethos-u55") == set()
    assert rules(spec(kernel_shape=(3, 3), dilations=(40, 1)), "ethos-u55") == set()
    assert rules(spec(groups=64, out_channels=128), "ethos-u55") == set()
    assert rules(spec(groups=4), "ethos-u55") == set()
    assert "max_stride" in rules(spec(strides=(4, 4)), "ethos-u55")
    assert "max_stride" not in rules(spec(strides=(4, 4)), "ethos-u85")
    assert "max_weight_sum" in rules(spec(weight_sum=127 * 65537), "ethos-u85")
    assert "max_weight_sum" not in rules(spec(weight_sum=127 * 65536), "ethos-u55")


def test_transposed_valid_shape():
    t = {"conv": {"transposed_valid_shape": True}}
    ct = dict(op_type="ConvTranspose", strides=(2, 2), pads=(0, 0, 0, 0))
    assert rules(spec(**ct, output_padding=(1, 1)), t) == {"transposed_valid_shape"}
    assert rules(spec(**ct), t) == set()                                     # k3 s2: 0
    assert rules(spec(**ct, kernel_shape=(1, 1)), t) == {"transposed_valid_shape"}  # needs 1
    assert rules(spec(**ct, kernel_shape=(1, 1), output_padding=(1, 1)), t) == set()


def test_same_pad_and_symmetry():
    target = {"conv": {"same_pad_only": True, "symmetric_pad": True}}
    assert rules(spec(pads=(0, 0, 1, 1)), target) == {"same_pad_only", "symmetric_pad"}
    assert rules(spec(kernel_shape=(1, 1), pads=(0, 0, 0, 0)), target) == set()


def test_auto_pad_resolution():
    s = spec(auto_pad="SAME_UPPER", pads=(), strides=(2, 2), input_shape=(1, 64, 7, 8))
    assert effective_pads(s) == (1, 0, 1, 1)
    s = spec(auto_pad="SAME_LOWER", pads=(), strides=(2, 2), input_shape=(1, 64, 7, 8))
    assert effective_pads(s) == (1, 1, 1, 0)
    assert effective_pads(spec(auto_pad="SAME_UPPER", pads=(), input_shape=None)) is None


def test_unknown_shapes_are_not_violations():
    s = spec(input_shape=None, output_shape=None)
    assert rules(s, {"conv": {"input_width": [4, 8], "max_batch": 1}}) == set()


def test_quantized_ops_are_checked_too():
    assert "max_in_channels" in rules(spec(op_type="QLinearConv", in_channels=4096), "k210")
    assert "max_out_channels" in rules(spec(op_type="ConvInteger", out_channels=4096), "k210")


def test_messages_carry_numbers():
    v = check(spec(in_channels=2048), load_target({"conv": {"max_in_channels": 1024}}))[0]
    assert v.message == "input channels must be at most 1024; node has 2048"
    assert v.to_dict() == {"rule": "max_in_channels", "value": 2048, "limit": 1024,
                           "message": v.message}
