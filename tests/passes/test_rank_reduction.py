"""Data movement through 5-D and 6-D tensors (pixel shuffle / space-to-depth spelt as Reshape ->
Transpose -> Reshape, MobileViT's patch unfold and fold, ResNeSt's radix sum) is rewritten for a
rank-4 target into merged-axis Transposes or a Gather: bit-equal on onnxruntime, nothing above
4-D left, and the checker then finds nothing; a symbolic batch is fine, another symbolic axis
declines saying so."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import convrewrite as cr
from convrewrite.decline import Decline
from convrewrite.models.builder import GraphBuilder, T
from convrewrite.ops.reference import standard_reference
from convrewrite.plan.movement import unify
from convrewrite.plan.permutation import merged_axes, plan_transposes
from tests.conv_cases import random_input, run
from tests.passes.variant_cases import ops_of

NO_TRANSPOSE = {"name": "no-transpose", "max_tensor_rank": 4,
                "ops": ["Conv", "Relu", "Reshape", "Gather", "Identity"]}


def shape_const(g: GraphBuilder, name: str, dims) -> str:
    return g.const(name, np.array(dims, np.int64))


def view_permute_view(g, x: str, view, perm, final, name: str) -> str:
    y = g.node("Reshape", [x, shape_const(g, f"{name}/v1", view)], f"{name}/reshape1")
    y = g.node("Transpose", [y], f"{name}/transpose", perm=list(perm))
    return g.node("Reshape", [y, shape_const(g, f"{name}/v2", final)], f"{name}/reshape2")


def pixel_shuffle_model(batch=1, channels=3, r=2, size=(5, 6)):
    """conv -> depth-to-space as a 6-D view [N, C, r, r, H, W] -> conv."""
    g = GraphBuilder("pixel_shuffle", seed=3)
    h, w = size
    x = g.conv(g.input("input", 4, size, batch), channels * r * r, 3, name="before")
    b = batch if isinstance(batch, int) else -1
    y = view_permute_view(g, x.name, [b, channels, r, r, h, w], (0, 1, 4, 2, 5, 3),
                          [b, channels, h * r, w * r], "d2s")
    g.output(g.conv(T(y, channels, (h * r, w * r)), 5, 3, name="after"), "out")
    return g.build()


def space_to_depth_model(batch=1):
    """conv -> space-to-depth as [N, C, H/b, b, W/b, b] -> [N, C*b*b, H/b, W/b] -> conv."""
    g = GraphBuilder("space_to_depth", seed=4)
    x = g.conv(g.input("input", 3, (8, 10), batch), 4, 3, name="before")
    y = view_permute_view(g, x.name, [batch, 4, 4, 2, 5, 2], (0, 1, 3, 5, 2, 4),
                          [batch, 16, 4, 5], "s2d")
    g.output(g.conv(T(y, 16, (4, 5)), 6, 1, name="after"), "out")
    return g.build()


def mobilevit_model(batch=1, channels=8, patch=2, grid=(3, 4), symbolic=False):
    """MobileViT's unfold b c (h ph) (w pw) -> b (ph pw) (h w) c, a per-token op, the fold back
    (``symbolic``: a batch "N", ``batch`` -1 in the views)."""
    g = GraphBuilder("mobilevit", seed=5)
    h, w = grid
    x = g.conv(g.input("input", 3, (h * patch, w * patch), "N" if symbolic else batch),
               channels, 3, name="local")
    p = patch
    tokens = view_permute_view(g, x.name, [batch, channels, h, p, w, p], (0, 3, 5, 2, 4, 1),
                               [batch, p * p, h * w, channels], "unfold")
    tokens = g.node("Relu", [tokens], "transformer")
    y = view_permute_view(g, tokens, [batch, p, p, h, w, channels], (0, 5, 3, 1, 4, 2),
                          [batch, channels, h * p, w * p], "fold")
    g.output(g.conv(T(y, channels, (h * p, w * p)), 4, 1, name="fusion"), "out")
    return g.build()


def radix_model(op="ReduceSum", radix=2, channels=4):
    """ResNeSt's split attention without the softmax: [N, r*C, H, W] viewed [N, r, C, H, W] and
    reduced over r."""
    g = GraphBuilder("radix", seed=6)
    x = g.conv(g.input("input", 3, (5, 5), 1), radix * channels, 3, name="splat")
    y = g.node("Reshape", [x.name, shape_const(g, "radix/v", [1, radix, channels, 5, 5])],
               "radix/reshape")
    if op == "ReduceSum":
        y = g.node(op, [y, shape_const(g, "radix/axes", [1])], "radix/sum", keepdims=0)
    else:
        y = g.node(op, [y], "radix/sum", axes=[1], keepdims=0)
    g.output(g.conv(T(y, channels, (5, 5)), 4, 1, name="after"), "out")
    return g.build()


def subsample_model():
    """Every other pixel through a 6-D view and a Slice: a selection, not a permutation."""
    g = GraphBuilder("subsample", seed=7)
    x = g.conv(g.input("input", 3, (6, 8), 1), 4, 3, name="before")
    y = g.node("Reshape", [x.name, shape_const(g, "sub/v", [1, 4, 3, 2, 4, 2])], "sub/reshape1")
    y = g.node("Slice", [y, shape_const(g, "sub/s", [0, 0]), shape_const(g, "sub/e", [1, 1]),
                         shape_const(g, "sub/a", [3, 5])], "sub/slice")
    y = g.node("Reshape", [y, shape_const(g, "sub/v2", [1, 4, 3, 4])], "sub/reshape2")
    g.output(g.conv(T(y, 4, (3, 4)), 2, 1, name="after"), "out")
    return g.build()


def max_rank(model: onnx.ModelProto) -> int:
    typed = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    infos = list(typed.graph.value_info) + list(typed.graph.output) + list(typed.graph.input)
    assert len(typed.graph.value_info) >= len(model.graph.node) - 2     # shapes were inferred
    return max(len(i.type.tensor_type.shape.dim) for i in infos)


def rewrite_bit_equal(model, target="generic", batch=1):
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    feeds = random_input(model, batch=batch)
    assert np.array_equal(run(out, feeds)[0], run(standard_reference(model), feeds)[0])
    assert max_rank(out) <= 4
    assert not cr.check(out, target).remaining
    records = [r for r in report.records if r.pass_name == "rank_reduction"]
    assert records and all(r.verify["passed"] for r in records)
    return out, records


@pytest.mark.parametrize("batch", [1, 2])
def test_pixel_shuffle_is_transposed_in_4d(batch):
    model = pixel_shuffle_model(batch)
    assert max_rank(model) == 6
    out, records = rewrite_bit_equal(model)
    assert "Transpose" in ops_of(out) and "Gather" not in ops_of(out)
    assert records[0].tolerance == "exact" and records[0].verify["bit_exact"]


def test_space_to_depth_is_transposed_in_4d():
    out, _ = rewrite_bit_equal(space_to_depth_model())
    assert "Gather" not in ops_of(out)


@pytest.mark.parametrize("batch", [1, 2])
def test_mobilevit_unfold_and_fold(batch):
    out, records = rewrite_bit_equal(mobilevit_model(batch), batch=batch)
    assert len(records) == 2 and "Gather" not in ops_of(out)
    assert ops_of(out).count("Transpose") == 4      # two each: no middle order needs more


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax"])
def test_radix_split_reduced_over_a_merged_view(op):
    out, records = rewrite_bit_equal(radix_model(op))
    assert ops_of(out).count(op) == 1 and "Transpose" not in ops_of(out)
    assert records[0].tolerance == ("exact" if op == "ReduceMax" else "reassociating")


def test_a_strided_selection_is_sliced():
    out, records = rewrite_bit_equal(subsample_model())
    assert "Gather" not in ops_of(out) and ops_of(out).count("Slice") == 1
    assert "Slice" in records[0].rewrite


def test_without_slice_a_selection_is_gathered():
    out, records = rewrite_bit_equal(subsample_model(), NO_TRANSPOSE)
    assert "Slice" not in ops_of(out) and "Gather" in records[0].rewrite


def attention_model(tokens=6, heads=2, dim=4, batch=1):
    """ViT/MobileViT attention: qkv viewed [B, N, 3, heads, d] (5-D), permuted (2, 0, 3, 1, 4),
    q, k, v taken by Gather on axis 0, then softmax(q k^T) v."""
    g = GraphBuilder("attention", seed=9)
    x = g.relu(g.input("input", tokens, (3 * heads * dim,), batch), "qkv")
    b = batch if isinstance(batch, int) else -1
    y = g.node("Reshape", [x.name, shape_const(g, "qkv/v", [b, tokens, 3, heads, dim])],
               "qkv/reshape")
    y = g.node("Transpose", [y], "qkv/transpose", perm=[2, 0, 3, 1, 4])
    q, k, v = (g.node("Gather", [y, g.const(f"pick{i}", np.array(i, np.int64))], f"pick{i}",
                      axis=0) for i in range(3))
    kt = g.node("Transpose", [k], "kt", perm=[0, 1, 3, 2])
    att = g.node("Softmax", [g.node("MatMul", [q, kt], "qk")], "softmax", axis=-1)
    g.output(T(g.node("MatMul", [att, v], "av"), heads, (tokens, dim)), "out")
    return g.build()


@pytest.mark.parametrize("batch", [1, "N"])
def test_attention_qkv_split_is_sliced_and_transposed(batch):
    out, records = rewrite_bit_equal(attention_model(batch=batch))
    assert "Gather" not in ops_of(out) and ops_of(out).count("Slice") == 3
    assert all("Slice" in part for part in records[0].rewrite.split(";"))


def test_without_transpose_a_permutation_is_gathered_per_sample():
    out, records = rewrite_bit_equal(pixel_shuffle_model(batch=2), NO_TRANSPOSE, batch=2)
    assert "Transpose" not in ops_of(out) and ops_of(out).count("Gather") == 1
    assert "per sample" in records[0].rewrite


@pytest.mark.parametrize("build", [pixel_shuffle_model, mobilevit_model])
def test_symbolic_batch_is_probed_at_two_sizes(build):
    model = build(batch="N") if build is pixel_shuffle_model else build(batch=-1, symbolic=True)
    out, records = rewrite_bit_equal(model)
    for batch in (2, 3):        # the views' batch extent is -1: any batch runs
        feeds = random_input(model, batch=batch)
        assert np.array_equal(run(out, feeds)[0], run(standard_reference(model), feeds)[0])


def test_symbolic_spatial_axis_declines_saying_why():
    g = GraphBuilder("symbolic_h", seed=8)
    x = g.relu(g.input("input", 12, ("H", 6), 1), "pre")
    y = view_permute_view(g, x.name, [1, 3, 2, 2, -1, 6], (0, 1, 4, 2, 5, 3), [1, 3, -1, 12],
                          "d2s")
    g.output(T(y, 3, ("H2", 12)), "out")
    _, report = cr.rewrite(g.build(), "generic")
    assert report.status != "ok"
    text = report.render()
    assert "rank_reduction: the region's input pre.out has a symbolic shape" in text, text


def test_legal_movement_is_left_alone():
    out, report = cr.rewrite(pixel_shuffle_model(), {"name": "6d ok"})
    assert report.status == "ok" and not report.records and max_rank(out) == 6


def test_merged_axes_are_minimal():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert merged_axes(x.transpose(0, 1, 3, 2)) == [(6, 20), (5, 1), (4, 5)]
    assert merged_axes(x) == [(120, 1)]
    assert merged_axes(x[:, :, ::-1]) is None and merged_axes(x[:, :2]) is None


@pytest.mark.parametrize("limit", [2, 3, 4])
def test_every_axis_permutation_fits_in_block_swaps(limit):
    rng = np.random.default_rng(limit)
    for _ in range(60):
        shape = tuple(int(d) for d in rng.integers(1, 4, rng.integers(1, 7)))
        perm = rng.permutation(len(shape))
        index = np.arange(int(np.prod(shape))).reshape(shape).transpose(perm)
        plan = plan_transposes(index, limit)
        if plan is None:
            assert limit < 4
            continue
        moved = np.arange(index.size)
        for view, p in zip(plan.views, plan.perms):
            moved = moved.reshape(view).transpose(p)
        assert np.array_equal(moved.reshape(-1), index.reshape(-1)) and plan.rank <= limit


def test_steps_made_one_across_batches_or_declined():
    two = [("reshape", [6, 4]), ("transpose", [1, 0]), ("reshape", [4, 2, 3])]
    three = [("reshape", [9, 4]), ("transpose", [1, 0]), ("reshape", [4, 3, 3])]
    assert unify([two, three]) == [("reshape", [-1, 4]), ("transpose", [1, 0]),
                                   ("reshape", [4, -1, 3])]
    picked = [("gather", np.array([0, 2])), ("gather", np.array([0, 3]))]
    assert isinstance(unify([[picked[0]], [picked[1]]]), Decline)
    assert isinstance(unify([[("reshape", [6, 4])], [("reshape", [9, 6])]]), Decline)


@pytest.mark.parametrize("build", [pixel_shuffle_model, mobilevit_model])
def test_qdq_movement_keeps_its_quantization_exactly(build, tmp_path):
    """onnxruntime's QDQ quantizer wraps each Reshape/Transpose in Q/DQ on one grid: still a
    pure movement, and what replaces it is requantized on that grid for the conv after it."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    model = build()
    onnx.save(model, tmp_path / "f.onnx")
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"input": np.random.default_rng(i).uniform(-1, 1, shape).astype(
                np.float32)} for i in range(2)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Reshape",
                                                                       "Transpose"])
    quantized = onnx.load(tmp_path / "q.onnx")
    assert max_rank(quantized) == 6 and "QuantizeLinear" in ops_of(quantized)
    out, records = rewrite_bit_equal(quantized)
    producers = {o: n.op_type for n in out.graph.node for o in n.output}
    assert all(producers[n.input[0]] == "DequantizeLinear"          # still QDQ form
               for n in out.graph.node if n.op_type == "Conv")
    assert ops_of(out).count("QuantizeLinear") < ops_of(quantized).count("QuantizeLinear")
    assert len(records) == (2 if build is mobilevit_model else 1)
    assert all(r.tolerance == "exact" and r.verify["bit_exact"] for r in records)


def test_swin_window_partition_and_reverse():
    """Swin's window_partition ([B, H, W, C] viewed [B, H/ws, ws, W/ws, ws, C], permuted
    (0, 1, 3, 2, 4, 5), viewed [-1, ws, ws, C]) and window_reverse around a per-window op; a
    second rewrite of the result finds nothing to do."""
    g = GraphBuilder("swin", seed=10)
    x = g.relu(g.input("input", 8, (8, 6), 1), "pre")          # [1, 8(H), 8(W), 6(C)]
    y = view_permute_view(g, x.name, [1, 2, 4, 2, 4, 6], (0, 1, 3, 2, 4, 5), [-1, 4, 4, 6],
                          "partition")
    y = g.node("Relu", [y], "attention")
    y = view_permute_view(g, y, [1, 2, 2, 4, 4, 6], (0, 1, 3, 2, 4, 5), [1, 8, 8, 6], "reverse")
    g.output(T(g.node("Relu", [y], "post"), 8, (8, 6)), "out")
    out, records = rewrite_bit_equal(g.build())
    assert len(records) == 2 and ops_of(out).count("Transpose") == 2    # one each, 4-D
    again, report = cr.rewrite(out, "generic")
    assert report.status == "ok" and not report.records
