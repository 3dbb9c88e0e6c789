"""FuseShift in the real build: a shift (one-hot depthwise conv) read only by a dense 1x1 conv
becomes one call of the fused kernel, checked against onnxruntime; everything else is left alone;
``convrewrite MODEL --target k210 --tvm llvm`` uses it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

tvm = pytest.importorskip("tvm")

import convrewrite as cr  # noqa: E402
from convrewrite.cli import main  # noqa: E402
from convrewrite.models.variants import shift_resnet  # noqa: E402
from convrewrite.ops.shift import one_hot_depthwise_weight, shift_offsets  # noqa: E402
from convrewrite.tvm.build import check_model, import_onnx  # noqa: E402
from convrewrite.tvm.shift_fusion import FuseShift, fused_calls  # noqa: E402
from convrewrite.verify import make_inputs  # noqa: E402


def depthwise_convs(mod) -> int:
    return sum(1 for ln in mod.script(show_meta=False).splitlines()
               if "R.nn.conv2d(" in ln and "groups=1," not in ln)


def test_shift_resnet_pairs_are_fused_and_match_onnxruntime():
    model, report = cr.rewrite(shift_resnet(size=16, channels=32, form="depthwise"), "k210",
                               verify=False)
    assert report.status == "ok"
    feeds = make_inputs(model, seed=0)
    mod = import_onnx(model, feeds)
    assert depthwise_convs(mod) == 2
    fused = FuseShift()(mod)
    assert fused_calls(fused) == 2 and depthwise_convs(fused) == 0
    result = check_model(model, "llvm", feeds)
    assert result.ran and result.passed, result.summary()
    assert result.fused_shifts == 2 and "2 shift + 1x1 pairs fused" in result.summary()


def test_reduce_conv_bias_shortcut_and_relu_are_folded_into_the_fused_call():
    """ShiftResNet's block tail (1x1 reduce, its bias, the shortcut add, the ReLU) is one call
    of the fused kernel: no add or relu of that size is left in the module."""
    from convrewrite.tvm.shift_fusion import find_shift_pairs
    model = shift_resnet(size=16, channels=32, form="depthwise")
    feeds = make_inputs(model, seed=0)
    mod = import_onnx(model, feeds)
    sites = find_shift_pairs(mod["main"])
    assert [site.steps for site in sites] == [("bias", "residual", "relu")] * 2
    fused = FuseShift()(mod)
    text = fused.script(show_meta=False)
    assert fused_calls(fused) == 2 and "R.nn.relu(" in text                 # the expand ReLUs
    assert text.count("R.add(") == text.count("R.nn.relu(") == 2             # expand bias, ReLU
    result = check_model(model, "llvm", feeds)
    assert result.ran and result.passed, result.summary()


def shift_pair_model(*, channels=18, out_channels=16, size=8, kernel=3, dilation=1,
                     stride=1, second_reader=False, not_one_hot=False, seed=0) -> onnx.ModelProto:
    """x -> one-hot depthwise conv (a shift) -> 1x1 conv (+ bias) -> y; optionally the shift
    is also a graph output, the 1x1 conv strided, or one kernel has two taps."""
    rng = np.random.default_rng(seed)
    offsets = shift_offsets(channels, kernel, dilation)
    dw = one_hot_depthwise_weight(offsets, kernel, dilation)
    if not_one_hot:
        dw[0, 0, 0, 0] = 0.5
    pw = rng.uniform(-1, 1, (out_channels, channels, 1, 1)).astype(np.float32)
    bias = rng.uniform(-1, 1, out_channels).astype(np.float32)
    pad = dilation * (kernel // 2)
    nodes = [helper.make_node("Conv", ["x", "dw"], ["shifted"], group=channels,
                              kernel_shape=[kernel, kernel], pads=[pad] * 4,
                              dilations=[dilation] * 2),
             helper.make_node("Conv", ["shifted", "pw", "b"], ["y"], strides=[stride] * 2)]
    out = (size - 1) // stride + 1
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                             [1, out_channels, out, out])]
    if second_reader:
        outputs.append(helper.make_tensor_value_info("shifted", onnx.TensorProto.FLOAT,
                                                     [1, channels, size, size]))
    graph = helper.make_graph(
        nodes, "shift_pair",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, channels, size, size])],
        outputs, [numpy_helper.from_array(dw, "dw"), numpy_helper.from_array(pw, "pw"),
                  numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("kwargs,fused", [
    ({}, 1),
    ({"channels": 50, "out_channels": 40, "kernel": 5, "size": 7}, 1),  # offsets up to 2
    ({"channels": 27, "dilation": 2, "size": 9}, 1),
    ({"second_reader": True}, 0),       # the shifted tensor is needed: nothing to fuse
    ({"stride": 2}, 0),                 # the fused kernel has no stride
    ({"not_one_hot": True}, 0),         # a real depthwise conv, not a shift
])
def test_fusion_only_where_exact(kwargs, fused):
    model = shift_pair_model(**kwargs)
    feeds = make_inputs(model, seed=1)
    mod = FuseShift()(import_onnx(model, feeds))
    assert fused_calls(mod) == fused
    assert depthwise_convs(mod) == 1 - fused
    result = check_model(model, "llvm", feeds)
    assert result.ran and result.passed, result.summary()
    assert result.fused_shifts == fused


def test_cli_tvm_llvm_fuses_the_shifts(tmp_path, capsys):
    path = tmp_path / "shift.onnx"
    onnx.save(shift_resnet(size=16, channels=32, form="depthwise"), str(path))
    report = tmp_path / "r.json"
    code = main([str(path), "--target", "k210", "--tvm", "llvm", "--report", str(report)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "matches onnxruntime" in text and "2 shift + 1x1 pairs fused" in text
    tvm_report = json.loads(report.read_text())["tvm"]
    assert tvm_report["passed"] and tvm_report["fused_shifts"] == 2
