"""The TVM path end to end: rewritten demo models imported into Relax, built for LLVM with our
schedules, run and checked against onnxruntime; CUDA code generated and compiled by nvcc (run
only where a GPU is present); the command line's --tvm and --tvm-out."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import convrewrite as cr  # noqa: E402
from convrewrite.cli import main  # noqa: E402
from convrewrite.models import conv1d_net, demo_wide, resnet18  # noqa: E402
from convrewrite.tvm.build import build, check_model, cuda_source, export, import_onnx  # noqa: E402
from convrewrite.tvm.run import run_executable  # noqa: E402
from convrewrite.tvm.conv_to_gemm import LowerConvsToGemm  # noqa: E402
from convrewrite.tvm.machines import gpu_present  # noqa: E402
from convrewrite.verify import make_inputs  # noqa: E402

MODELS = {
    "demo_wide-k210": (demo_wide, "k210"),
    "resnet18_64px-k210": (lambda: resnet18(image_size=64, num_classes=10), "k210"),
    "conv1d_net-generic": (conv1d_net, "generic"),
}


@pytest.fixture(scope="session")
def rewritten():
    """Each demo model rewritten for its target, once per session: (model, feeds)."""
    cache = {}

    def get(name):
        if name not in cache:
            builder, target = MODELS[name]
            model, report = cr.rewrite(builder(), target, verify=False)
            assert report.records and report.status == "ok", report.render()
            cache[name] = model, make_inputs(model, seed=0)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(MODELS))
def test_llvm_build_matches_onnxruntime(rewritten, name):
    model, feeds = rewritten(name)
    result = check_model(model, "llvm", feeds)
    assert result.ran and result.passed, result.summary()
    assert result.comparison["max_abs"] < 1e-3


def test_our_kernel_replaces_dense_2d_convs(rewritten):
    model, feeds = rewritten("demo_wide-k210")
    mod = import_onnx(model, feeds)

    def convs(m):
        lines = [ln for ln in m.script().splitlines() if "R.nn.conv2d(" in ln]
        return [ln for ln in lines if "groups=1," in ln], [ln for ln in lines if "groups=1," not in ln]

    dense, grouped = convs(mod)
    assert dense and grouped
    lowered = LowerConvsToGemm("llvm")(mod)
    dense_after, grouped_after = convs(lowered)
    assert dense_after == [] and len(grouped_after) == len(grouped)   # grouped: TVM's own conv
    calls = [ln for ln in lowered.script().splitlines() if "R.call_tir(cls.conv_gemm" in ln]
    assert len(calls) == len(dense)


def test_untuned_default_path_agrees(rewritten):
    """schedules=False (TVM's LegalizeOps kernels alone) computes the same numbers."""
    model, feeds = rewritten("conv1d_net-generic")
    result = check_model(model, "llvm", feeds, schedules=False)
    assert result.ran and result.passed, result.summary()


@pytest.fixture(scope="session")
def cuda_build(rewritten, tmp_path_factory):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH")
    model, feeds = rewritten("demo_wide-k210")
    executable = build(import_onnx(model, feeds), "cuda")
    out = tmp_path_factory.mktemp("cuda")
    return model, feeds, executable, export(executable, "cuda", out)


def test_cuda_source_is_generated_with_gemm_kernels(cuda_build):
    _, _, executable, files = cuda_build
    source = cuda_source(executable)
    assert source and "__global__" in source
    assert "matmul" in source and "im2col" in source        # convs went through GEMM form
    assert "__shared__" in source                           # dlight's Matmul rule tiles them
    assert any(f.endswith(".cu") for f in files) and any(f.endswith(".so") for f in files)


def test_cuda_source_compiles_with_nvcc(cuda_build, tmp_path):
    _, _, _, files = cuda_build
    source = next(f for f in files if f.endswith(".cu"))
    cubin = tmp_path / "model.cubin"
    done = subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "-O3", "-o", str(cubin), source],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert cubin.stat().st_size > 0


def test_cuda_run_matches_onnxruntime(cuda_build):
    if not gpu_present():
        pytest.skip("no CUDA GPU on this machine")
    model, feeds, executable, _ = cuda_build
    from convrewrite.verify import run
    got = run_executable(executable, "cuda", [feeds[k] for k in feeds])[0]
    ref = run(model, feeds)[model.graph.output[0].name]
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())),
                               rtol=1e-3)


def test_cli_tvm_llvm_exports_library(tmp_path, capsys):
    out = tmp_path / "lib"
    code = main(["--demo", "--target", "generic", "-o", str(tmp_path / "d.onnx"), "--tvm", "llvm",
                 "--tvm-out", str(out), "--report", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "tvm llvm: built for" in text and "matches onnxruntime" in text
    assert (out / "model.llvm.so").stat().st_size > 0
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tvm"]["passed"] and report["tvm"]["ran"]


@pytest.mark.parametrize("argv,message", [
    (["--tvm", "foo"], "--tvm 'foo': expected one of llvm, cuda"),
    (["--tvm-out", "somewhere"], "--tvm-out needs --tvm"),
    (["--tvm", "llvm", "--check-only"], "cannot go with --check-only"),
])
def test_cli_bad_tvm_flags_are_one_line_exit_2(tmp_path, capsys, argv, message):
    code = main(["--demo", "--target", "generic", "-o", str(tmp_path / "d.onnx"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.onnx").exists()


def test_cli_cuda_without_nvcc_is_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    code = main(["--demo", "--target", "generic", "-o", str(tmp_path / "d.onnx"), "--tvm", "cuda"])
    assert code == 2
    assert "needs nvcc" in capsys.readouterr().err
