"""``--tvm`` builds of sparse models: every sparse conv a call of our gather-GEMM kernel inside one
Relax module, rulebooks built once per input on the host; against the lowered model on
onnxruntime, against spconv's outputs (fixture), on 1 and 2 threads, through the CLI, and the
CUDA build generated and compiled with nvcc (run only where a GPU is present)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

tvm = pytest.importorskip("tvm")

from convrewrite.models.sparse_nets import (sparse_down_up_3d, sparse_middle_encoder_3d,  # noqa: E402
                                            sparse_unet_3d)
from convrewrite.pipeline import rewrite_model  # noqa: E402
from convrewrite.sparse.inputs import random_sites  # noqa: E402
from convrewrite.sparse.spconv_import import keyed_difference, load_layers, to_onnx  # noqa: E402
from convrewrite.sparse.tvm_model import SparseTvmModel  # noqa: E402
from convrewrite.target import load_target  # noqa: E402
from convrewrite.verify import run  # noqa: E402
from tests.sparse.cases import HOST  # noqa: E402


def _feeds(grid, channels, count=400, seed=0):
    rng = np.random.default_rng(seed)
    return {"coordinates": random_sites(rng, count, grid, dtype=np.int32),
            "features": rng.uniform(-1, 1, (count, channels)).astype(np.float32)}


@pytest.mark.parametrize("builder, grid, channels, rulebooks", [
    (sparse_down_up_3d, (12, 10, 8), 3, 2),         # the inverse reads the strided conv's
    (sparse_unet_3d, (24, 20, 12), 4, 6),           # decoder SubMs share the encoder's
    (sparse_middle_encoder_3d, (48, 48, 16), 16, 5),
], ids=["down-up", "unet", "middle-encoder"])
def test_matches_the_lowered_model(builder, grid, channels, rulebooks):
    model = builder(grid)
    built = SparseTvmModel(model).build()
    assert built.built_rulebooks == rulebooks
    lowered, _ = rewrite_model(model, load_target(HOST))
    for seed in (0, 1):
        feeds = _feeds(grid, channels, seed=seed)
        got, ref = built.run(feeds), run(lowered, feeds)
        for name, value in ref.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4)


def test_same_bits_on_one_and_two_threads():
    model = sparse_unet_3d((24, 20, 12))
    built = SparseTvmModel(model).build()
    feeds = _feeds((24, 20, 12), 4, 600)
    config = tvm.get_global_func("runtime.config_threadpool")
    results = []
    for threads in (1, 2, 1):
        config(0, threads)
        results.append(built.run(feeds)["out_features"])
    config(0, 0)
    assert all(np.array_equal(results[0], r) for r in results[1:])


def test_spconv_net_through_tvm_equals_spconv():
    layers, data = load_layers(Path(__file__).with_name("spconv_net_fixture") / "unet3d.npz")
    model = to_onnx(layers, tuple(data["grid"]), 4)
    got = SparseTvmModel(model).build().run({"features": data["features"],
                                             "coordinates": data["coords"]})
    err = keyed_difference(got["out_coordinates"], got["out_features"], data["out_coordinates"],
                           data["out_features"])
    assert err < 1e-4


def test_cli_tvm_llvm_runs_our_kernel(tmp_path):
    path = tmp_path / "unet.onnx"
    onnx.save(sparse_unet_3d((24, 20, 12)), path)
    (tmp_path / "host.yaml").write_text("name: host\n")
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "convrewrite.cli", str(path), "--target",
                           str(tmp_path / "host.yaml"), "--tvm", "llvm", "-o",
                           str(tmp_path / "out.onnx"), "--report", str(report)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    tvm_report = json.loads(report.read_text())["tvm"]
    assert tvm_report["ran"] and tvm_report["passed"]
    assert tvm_report["sparse"]["convs"] == 10 and tvm_report["sparse"]["rulebooks"] == 6
    assert "sparse convs on our gather-GEMM kernel" in tvm_report["summary"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_build_generates_and_compiles():
    from convrewrite.tvm.build import cuda_source
    model = sparse_down_up_3d((12, 10, 8))
    built = SparseTvmModel(model, "cuda").build()
    source = cuda_source(built.executable)
    assert "sparse_conv_3x8x27" in source and "blockIdx.x" in source and "atomicAdd" not in source
    if not tvm.cuda(0).exist:
        pytest.skip("no GPU here: the sparse model was built for CUDA (nvcc), not run")
    lowered, _ = rewrite_model(model, load_target(HOST))
    feeds = _feeds((12, 10, 8), 3)
    np.testing.assert_allclose(built.run(feeds)["out_features"],
                               run(lowered, feeds)["out_features"], rtol=1e-4, atol=1e-4)


def _main_ops(built: SparseTvmModel) -> dict[str, int]:
    from collections import Counter
    from tvm import relax
    ops: Counter = Counter()

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            ops[e.op.name] += 1
    relax.analysis.post_order_visit(built.relax_module()["main"].body, visit)
    return dict(ops)


def test_batchnorm_and_relu_after_a_conv_run_in_its_kernel():
    """A BatchNorm / ReLU right after a sparse conv is applied in the conv kernel's write-back
    (no elementwise pass over the features of its own); one that is not (the LeakyReLU here) stays
    a Relax op. Outputs still equal spconv's."""
    layers, data = load_layers(Path(__file__).with_name("spconv_net_fixture") / "unet3d.npz")
    built = SparseTvmModel(to_onnx(layers, tuple(data["grid"]), 4))
    assert _main_ops(built) == {"relax.call_tir": len(built.convs), "relax.nn.leakyrelu": 1}
    assert [[n.op for n in c.absorbed] for c in built.convs] == [
        ["BatchNormalization", "Relu"], ["BatchNormalization", "Relu"], ["BatchNormalization"],
        [], ["BatchNormalization", "Relu"], []]
    got = built.build().run({"features": data["features"], "coordinates": data["coords"]})
    assert keyed_difference(got["out_coordinates"], got["out_features"], data["out_coordinates"],
                            data["out_features"]) < 1e-4


def test_a_tensor_read_elsewhere_is_not_fused_away():
    """A conv or BatchNorm output that is also a graph output is still computed as it is: the
    chain is fused only up to it, and every output equals the lowered model's."""
    layers, data = load_layers(Path(__file__).with_name("spconv_net_fixture") / "unet3d.npz")
    model = to_onnx(layers, tuple(data["grid"]), 4)
    first_conv, first_bn = model.graph.node[0].output[0], model.graph.node[1].output[0]
    second_conv = model.graph.node[3].output[0]
    for name in (first_bn, second_conv):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                     None))
    built = SparseTvmModel(model)
    assert model.graph.node[0].output[0] == first_conv
    assert [n.op for n in built.convs[0].absorbed] == ["BatchNormalization"]
    assert built.convs[1].absorbed == []
    feeds = {"features": data["features"], "coordinates": data["coords"]}
    got = built.build().run(feeds)
    lowered, _ = rewrite_model(model, load_target(HOST))
    for name, value in run(lowered, feeds).items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4)
