"""The Relax ShuffleRemoval against the ONNX one: same selections, same forms, same numbers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

tvm = pytest.importorskip("tvm")

from convrewrite.models.variants import shufflenet_v2  # noqa: E402
from convrewrite.passes import ShuffleRemoval as OnnxShuffleRemoval  # noqa: E402
from convrewrite.pipeline import rewrite_model  # noqa: E402
from convrewrite.target import load_target  # noqa: E402
from convrewrite.tvm.build import build, import_onnx  # noqa: E402
from convrewrite.tvm.run import run_executable  # noqa: E402
from convrewrite.tvm.relax_shuffle import ShuffleLog, ShuffleRemoval  # noqa: E402
from tests.conv_cases import op_count, random_input, run  # noqa: E402


def relax_ops(mod) -> tuple[dict[str, int], int]:
    """Op counts of ``main`` and the highest tensor rank any binding makes."""
    from tvm import relax
    counts: dict[str, int] = {}
    ranks = [0]

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            counts[expr.op.name] = counts.get(expr.op.name, 0) + 1
            shape = getattr(expr.ty, "shape", None)
            if shape is not None and hasattr(shape, "values"):
                ranks[0] = max(ranks[0], len(shape.values))

    relax.analysis.post_order_visit(mod["main"], visit)
    return counts, ranks[0]


def relax_run(mod, feeds):
    return run_executable(build(mod, "llvm", schedules=False), "llvm", list(feeds.values()))[0]


@pytest.mark.parametrize("style", ["static", "split"])
@pytest.mark.parametrize("target", [
    "generic",                                                        # max_tensor_rank 4
    {"name": "no-transpose", "ops": ["Conv", "Add", "Relu", "Gather", "Reshape", "Split",
                                     "Concat", "MaxPool", "GlobalAveragePool", "Flatten",
                                     "Gemm", "Slice", "BatchNormalization"]},
], ids=["rank4", "no-transpose"])
def test_relax_shuffle_removal_equals_the_onnx_pass(style, target):
    target = load_target(target)
    model = shufflenet_v2(image_size=64, repeats=(2, 2, 2), shuffle=style)
    feeds = random_input(model)
    onnx_out, result = rewrite_model(model, target, (), graph_passes=(OnnxShuffleRemoval(),))
    records = [r for r in result.records if r.pass_name == "shuffle"]
    assert records
    mod = import_onnx(model, feeds)
    log = ShuffleLog()
    lowered = ShuffleRemoval(target, log)(mod)
    assert len(log.rewritten) == len(records) and not log.kept
    counts, highest_rank = relax_ops(lowered)
    assert highest_rank <= 4 and "relax.permute_dims" not in counts
    assert counts.get("relax.nn.conv2d", 0) == op_count(onnx_out, "Conv")
    takes_on_channels = counts.get("relax.take", 0)
    assert takes_on_channels == op_count(onnx_out, "Gather")
    got, want = relax_run(lowered, feeds), run(onnx_out, feeds)[0]
    np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, float(np.abs(want).max())),
                               rtol=1e-4)


def test_a_region_that_moves_pixels_is_kept_and_said_why():
    """Reshape to 5-D, swap the two spatial axes, reshape back: not a channel selection."""
    w = numpy_helper.from_array(np.ones((4, 8, 1, 1), np.float32), "W")
    shapes = [numpy_helper.from_array(np.array(s, np.int64), n)
              for s, n in (([1, 2, 4, 4, 4], "s5"), ([1, 8, 4, 4], "s4"))]
    nodes = [helper.make_node("Reshape", ["x", "s5"], ["r5"]),
             helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 1, 2, 4, 3]),
             helper.make_node("Reshape", ["t5", "s4"], ["r4"]),
             helper.make_node("Conv", ["r4", "W"], ["y"], kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "pixels", [helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, [1, 8, 4, 4])], [helper.make_tensor_value_info(
            "y", onnx.TensorProto.FLOAT, [1, 4, 4, 4])], [w, *shapes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 8, 4, 4)).astype(np.float32)}
    mod = import_onnx(model, feeds)
    log = ShuffleLog()
    kept = ShuffleRemoval("generic", log)(mod)
    assert not log.rewritten and "not a channel selection" in log.kept[0]
    np.testing.assert_allclose(relax_run(kept, feeds), run(model, feeds)[0], rtol=1e-5,
                               atol=1e-5)
