"""TVM targets for ``--tvm llvm`` and ``--tvm cuda``, as TVM 0.27's JSON-style dicts."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

from ..errors import BadInputError
from . import KINDS, require_tvm

DEFAULT_CUDA_ARCH = "sm_90"        # the GPUs we measure on (H100/H200) when none is present


def parse_kind(kind: str) -> str:
    if kind not in KINDS:
        raise BadInputError(f"--tvm {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "cuda" and shutil.which("nvcc") is None:
        raise BadInputError("--tvm cuda needs nvcc (the CUDA toolkit) on PATH; it was not found")
    return kind


def cpu_target(threads: int | None = None):
    """LLVM for this machine's CPU (its own -mcpu, so AVX-512 is used where it exists)."""
    tvm = require_tvm()
    mcpu = str(tvm.target.codegen.llvm_get_system_cpu())
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu,
                              "num-cores": threads or os.cpu_count() or 1})


def cuda_arch() -> str:
    """The present GPU's sm_XY, else DEFAULT_CUDA_ARCH (code is then generated, not run)."""
    tvm = require_tvm()
    dev = tvm.cuda(0)
    if dev.exist:
        return "sm_" + str(dev.compute_version).replace(".", "")
    return DEFAULT_CUDA_ARCH


def gpu_present() -> bool:
    tvm = require_tvm()
    return bool(tvm.cuda(0).exist)


def tvm_target(kind: str):
    tvm = require_tvm()
    if parse_kind(kind) == "llvm":
        return cpu_target()
    return tvm.target.Target({"kind": "cuda", "arch": cuda_arch()}, host=cpu_target())


@contextmanager
def nvcc_compiler():
    """Make TVM compile the CUDA it generates with nvcc (to a fatbin) rather than NVRTC, which
    needs the cuda-bindings package; registers TVM's compile callback (tvm.support.nvcc)."""
    require_tvm()
    import tvm.support.nvcc  # noqa: F401 - registers tvm_callback_cuda_compile
    old = os.environ.get("TVM_CUDA_COMPILE_MODE")
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TVM_CUDA_COMPILE_MODE", None)
        else:
            os.environ["TVM_CUDA_COMPILE_MODE"] = old
