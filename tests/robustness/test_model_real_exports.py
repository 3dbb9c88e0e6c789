"""Minimal reproductions of what tests/real/EXPORTS_TABLE.md found on real PyTorch exports, built
with onnx.helper (no torch needed).

TorchScript's mobilevit_xxs (dynamic batch N) keeps its 5-D attention views on every preset with
a tensor-rank limit (exit 3) while the dynamo export (static batch) rewrites. The cause, in small:
a 5-D view region whose input has batch 2N (an earlier Reshape folded a patch axis into the batch,
then a non-movement op) and whose shapes are computed from Shape(model input). The probe runs the
region alone with the graph input zero-filled at the probe's own batch, so a shape computed from it
disagrees with the probed tensor and onnxruntime fails: "the region does not run alone on
onnxruntime". With a static batch the same model rewrites.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .model_cases import run_cli


def folded_batch_view_model(batch: "int | str") -> onnx.ModelProto:
    """x [B,8,4,4] -> conv -> Reshape [2B,4,16] -> Relu -> Reshape 5-D [2B,4,2,2,4] -> Transpose
    -> Reshape back [B,8,4,4]; every Reshape shape computed from Shape(x)[0] like TorchScript's."""
    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "W")]
    consts += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
               (("two", [2]), ("r1", [4, 16]), ("r2", [4, 2, 2, 4]), ("r3", [8, 4, 4]))]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Shape", ["x"], ["s"], start=0, end=1),
        helper.make_node("Mul", ["s", "two"], ["n2"]),
        helper.make_node("Concat", ["n2", "r1"], ["shape1"], axis=0),
        helper.make_node("Reshape", ["c", "shape1"], ["v0"], name="to3d"),
        helper.make_node("Relu", ["v0"], ["v1"], name="relu"),
        helper.make_node("Concat", ["n2", "r2"], ["shape2"], axis=0),
        helper.make_node("Reshape", ["v1", "shape2"], ["v2"], name="to5d"),
        helper.make_node("Transpose", ["v2"], ["t"], perm=[0, 1, 3, 2, 4], name="swap"),
        helper.make_node("Concat", ["s", "r3"], ["shape3"], axis=0),
        helper.make_node("Reshape", ["t", "shape3"], ["y"], name="back"),
    ]
    shape = [batch, 8, 4, 4]
    graph = helper.make_graph(nodes, "folded_batch_view",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_folded_batch_view_with_a_static_batch_is_rewritten(tmp_path):
    got = run_cli(tmp_path, folded_batch_view_model(1), "generic")
    assert got.code == 0, got.stdout[-2000:]
    assert got.written and got.input_unchanged


# TorchScript's MobileViT: the region's batch is 2N, computed from Shape(x): probed with the
# model batch each ramp stands for (probe.model_batches), not the ramp's own batch
def test_folded_batch_view_with_a_symbolic_batch_is_rewritten(tmp_path):
    got = run_cli(tmp_path, folded_batch_view_model("N"), "generic")
    assert got.code == 0, got.stdout[-2000:]
    assert got.written and got.input_unchanged
