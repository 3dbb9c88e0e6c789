"""TorchScript's resnest14d (dynamic batch N) kept its 5-D radix views on every rank-4 preset
(exit 3) while the dynamo export (static batch) rewrites. The cause, in small (onnx.helper, no
torch): every Reshape target is Shape(x) arithmetic, C // radix written as Div -> Cast, which
onnx's data propagation does not fold, so with a symbolic batch the views' shapes were 'unk__k'
and rank_reduction / broadcast_views declined. ``batch_shapes`` learns them at probe batches
(constant, or a multiple of the batch); a dim that is neither still declines, saying why."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import convrewrite as cr
from convrewrite.batch_shapes import learn
from convrewrite.graph import infer_shapes
from tests.conv_cases import run
from tests.passes.test_rank_reduction import max_rank

from .model_cases import run_cli

RADIX, CHANNELS, SIZE = 2, 4, 6


def _ints(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def split_attention_ts(batch: "int | str" = "N", radix_from_data: bool = False
                       ) -> onnx.ModelProto:
    """timm's SplitAttn as TorchScript writes it: x [B,3,6,6] -> conv -> Relu r [B,8,6,6];
    r viewed [B, 2, C, H, W] with B, C // 2 (Div, Cast), H, W from Shape(r); summed over the
    radix, pooled, fc1 -> Relu -> fc2; rSoftMax's views from Shape(fc2); the attention viewed
    [B, 2, C, 1, 1], times the radix view, summed over the radix; a 1x1 conv. With
    ``radix_from_data`` the attention view's C is computed from the data (0 * max(x) + 4): not
    a function of the batch, and unknown."""
    rng = np.random.default_rng(0)
    weight = lambda name, *shape: numpy_helper.from_array(      # noqa: E731
        rng.standard_normal(shape).astype(np.float32) * 0.3, name)
    r_c = RADIX * CHANNELS
    consts = [weight("W1", r_c, 3, 3, 3), weight("W2", 8, CHANNELS, 1, 1),
              weight("W3", r_c, 8, 1, 1), weight("W4", 4, CHANNELS, 1, 1),
              _ints("i0", 0), _ints("i1", 1), _ints("i2", 2), _ints("i3", 3),
              _ints("ax0", [0]), _ints("ax1", [1]), _ints("radix", [RADIX]),
              _ints("one", [1]), _ints("minus", [-1]), _ints("two", RADIX),
              numpy_helper.from_array(np.float32(0), "zero"),
              numpy_helper.from_array(np.float32(CHANNELS), "four")]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "W1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        n("Relu", ["c"], ["r"], name="relu"),
        n("Shape", ["r"], ["s"], name="shape"),
        *[n("Gather", ["s", f"i{k}"], [f"d{k}"], name=f"dim{k}", axis=0) for k in range(4)],
        n("Div", ["d1", "two"], ["div"], name="div"),
        n("Cast", ["div"], ["cr"], name="cast", to=TensorProto.INT64),
        *[n("Unsqueeze", [d, "ax0"], [f"u_{d}"], name=f"unsq_{d}") for d in
          ("d0", "cr", "d2", "d3")],
        n("Concat", ["u_d0", "radix", "u_cr", "u_d2", "u_d3"], ["shape5"], name="cat5", axis=0),
        n("Reshape", ["r", "shape5"], ["x5"], name="radix_view"),
        n("ReduceSum", ["x5", "ax1"], ["gap"], name="gap_sum", keepdims=0),
        n("ReduceMean", ["gap"], ["pooled"], name="pool", axes=[2, 3], keepdims=1),
        n("Conv", ["pooled", "W2"], ["f1"], name="fc1"),
        n("Relu", ["f1"], ["f1r"], name="fc1_relu"),
        n("Conv", ["f1r", "W3"], ["f2"], name="fc2"),
        n("Shape", ["f2"], ["sa"], name="rsm_shape"),
        n("Gather", ["sa", "i0"], ["na"], name="rsm_batch", axis=0),
        n("Unsqueeze", ["na", "ax0"], ["u_na"], name="rsm_unsq"),
        n("Concat", ["u_na", "one", "radix", "minus"], ["rshape"], name="rsm_cat", axis=0),
        n("Reshape", ["f2", "rshape"], ["rv"], name="rsm_view"),
        n("Transpose", ["rv"], ["rt"], name="rsm_transpose", perm=[0, 2, 1, 3]),
        n("Softmax", ["rt"], ["rs"], name="rsm_softmax", axis=1),
        n("Concat", ["u_na", "minus"], ["fshape"], name="rsm_flat_cat", axis=0),
        n("Reshape", ["rs", "fshape"], ["flat"], name="rsm_flat"),
        n("Concat", ["u_d0", "minus", "one", "one"], ["ashape4"], name="attn_cat4", axis=0),
        n("Reshape", ["flat", "ashape4"], ["a4"], name="attn_4d"),
    ]
    channel = "u_cr"
    if radix_from_data:
        nodes += [n("ReduceMax", ["x"], ["mx"], name="data_max", keepdims=0),
                  n("Mul", ["mx", "zero"], ["mx0"], name="data_zero"),
                  n("Add", ["mx0", "four"], ["c4"], name="data_four"),
                  n("Cast", ["c4"], ["c4i"], name="data_cast", to=TensorProto.INT64),
                  n("Unsqueeze", ["c4i", "ax0"], ["u_c4"], name="data_unsq")]
        channel = "u_c4"
    nodes += [
        n("Concat", ["u_d0", "radix", channel, "one", "one"], ["ashape5"], name="attn_cat5",
          axis=0),
        n("Reshape", ["a4", "ashape5"], ["a5"], name="attn_view"),
        n("Mul", ["x5", "a5"], ["weighted"], name="attn_mul"),
        n("ReduceSum", ["weighted", "ax1"], ["summed"], name="attn_sum", keepdims=0),
        n("Conv", ["summed", "W4"], ["y"], name="after"),
    ]
    graph = helper.make_graph(
        nodes, "split_attention_ts",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, SIZE, SIZE])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in value.type.tensor_type.shape.dim]


def test_onnx_inference_alone_leaves_the_views_unknown():
    """The premise: without learning, the radix view's shape is not known (else this repro
    would not reproduce anything)."""
    inferred = infer_shapes(split_attention_ts())
    x5 = next(v for v in inferred.graph.value_info if v.name == "x5")
    assert not all(isinstance(d, int) for d in _dims(x5)[1:])


def test_the_views_are_learned_as_the_batch_and_constants():
    learned = learn(infer_shapes(split_attention_ts()))
    assert learned["x5"][0] == ["N", RADIX, CHANNELS, SIZE, SIZE]
    assert learned["a5"][0] == ["N", RADIX, CHANNELS, 1, 1]
    assert learned["weighted"][0] == ["N", RADIX, CHANNELS, SIZE, SIZE]


def test_a_dim_neither_constant_nor_a_multiple_of_the_batch_says_so():
    """Concat on the batch axis with one more sample: N + 1 rows, which no constant and no
    multiple of N is; the reason gives the probed values."""
    model = split_attention_ts()
    graph = model.graph
    graph.node.append(helper.make_node("Slice", ["r", "i0", "i1", "i0"], ["first"],
                                       name="first"))
    graph.node.append(helper.make_node("Concat", ["r", "first"], ["more"], name="more", axis=0))
    graph.node.append(helper.make_node("ReduceSum", ["more"], ["total"], name="total",
                                       keepdims=0))
    graph.output.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, []))
    learned = learn(infer_shapes(model))
    assert learned["more"].reason == ("its dim 0 is neither constant nor a multiple of the batch "
                                      "(3 at batch 2, 4 at batch 3, 6 at batch 5)")


@pytest.mark.parametrize("target", ["generic", "ethos-u55"])
def test_split_attention_with_a_symbolic_batch_is_rewritten(tmp_path, target):
    model = split_attention_ts()
    assert max_rank(model) == 5
    got = run_cli(tmp_path, model, target)
    assert got.code == 0, got.stdout[-3000:]
    assert got.written and got.input_unchanged
    out = onnx.load(str(got.output))
    assert _dims(out.graph.input[0]) == ["N", 3, SIZE, SIZE]          # the interface is kept
    assert _dims(out.graph.output[0]) == ["N", 4, SIZE, SIZE]
    assert not cr.check(out, target).remaining
    assert max_rank(out) <= 4
    for batch in (1, 3):
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, 3, SIZE, SIZE))
        feeds = {"x": x.astype(np.float32)}
        np.testing.assert_allclose(run(out, feeds)[0], run(model, feeds)[0],
                                   rtol=1e-4, atol=1e-5)
    assert "broadcast_views" in got.stdout or "1 arithmetic node" in got.stdout


def test_a_view_computed_from_data_still_declines_saying_why(tmp_path):
    got = run_cli(tmp_path, split_attention_ts(radix_from_data=True), "generic")
    assert got.code == 3, got.stdout[-3000:]
    assert "shape inference cannot tell it even at batch 2" in got.stdout, got.stdout[-3000:]
