"""A TorchScript export (dynamic batch N) of a 1-D net with a causal ``F.pad(h, (2, 0))`` before
a conv (a TCN block) exited 3 on k210 (30 convs: 'input height must be in [4, 256]; node has 1',
'tiling needs a static input size') while the dynamo export of the same net rewrites. TorchScript
writes the pads as a chain from constants alone: Concat([2, 0], ConstantOfShape([4])) ->
Reshape [-1, 2] -> reversed Slice -> Transpose -> Reshape [-1] -> Cast -> Pad. onnx's inference
with a symbolic batch does not evaluate it, and shape folding took only rank-1 tensors derived
from a Shape, without ConstantOfShape or Transpose, so the padded tensor's length stayed unknown.
In small (onnx.helper, no torch)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from convrewrite.shape_folding import folded_shapes
from tests.conv_cases import run

from .model_cases import run_cli

CHANNELS, LENGTH = 4, 30


def causal_pad_ts(batch: "int | str" = "N") -> onnx.ModelProto:
    """x [B, 4, 30] -> Conv1d k3 pad 1 -> Relu -> F.pad (2, 0) as TorchScript writes it ->
    depthwise Conv1d k3 (no padding) -> y [B, 4, 30]."""
    rng = np.random.default_rng(0)
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    const = lambda out, v: helper.make_node(                    # noqa: E731
        "Constant", [], [out], name=out, value=ints(out, v))
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "W1"], ["c"], name="conv", pads=[1, 1]),
        n("Relu", ["c"], ["r"], name="relu"),
        const("count", [4]), const("given", [2, 0]), const("rows", [-1, 2]),
        const("s0", [-1]), const("s1", [-9223372036854775807]), const("s2", [0]),
        const("s3", [-1]), const("flat", [-1]),
        n("ConstantOfShape", ["count"], ["zeros"], name="zeros",
          value=numpy_helper.from_array(np.array([0], np.int64))),
        n("Concat", ["given", "zeros"], ["all"], name="all", axis=0),
        n("Reshape", ["all", "rows"], ["pairs"], name="pairs"),
        n("Slice", ["pairs", "s0", "s1", "s2", "s3"], ["reversed"], name="reversed"),
        n("Transpose", ["reversed"], ["columns"], name="columns", perm=[1, 0]),
        n("Reshape", ["columns", "flat"], ["pads"], name="pads_flat"),
        n("Cast", ["pads"], ["pads64"], name="cast", to=TensorProto.INT64),
        n("Pad", ["r", "pads64"], ["padded"], name="pad", mode="constant"),
        n("Conv", ["padded", "W2"], ["y"], name="dw", group=CHANNELS),
    ]
    weights = [numpy_helper.from_array(
        (rng.standard_normal(s) * 0.3).astype(np.float32), name)
        for name, s in (("W1", (CHANNELS, CHANNELS, 3)), ("W2", (CHANNELS, 1, 3)))]
    graph = helper.make_graph(
        nodes, "causal_pad_ts",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, CHANNELS, LENGTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, CHANNELS, LENGTH])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_the_padded_length_is_folded():
    inferred = folded_shapes(causal_pad_ts(batch=2))
    padded = next(v for v in inferred.graph.value_info if v.name == "padded")
    assert [d.dim_value for d in padded.type.tensor_type.shape.dim] == [2, CHANNELS, LENGTH + 2]


def test_causal_pad_with_a_symbolic_batch_is_rewritten_on_k210(tmp_path):
    model = causal_pad_ts()
    got = run_cli(tmp_path, model, "k210")
    assert got.code == 0, got.stdout[-3000:]
    assert got.written and got.input_unchanged
    out = onnx.load(str(got.output))
    assert not cr.check(out, "k210").remaining
    for batch in (1, 3):
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, CHANNELS, LENGTH))
        feeds = {"x": x.astype(np.float32)}
        np.testing.assert_allclose(run(out, feeds)[0], run(model, feeds)[0],
                                   rtol=1e-4, atol=1e-5)
