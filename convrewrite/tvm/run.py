"""Running a build on this machine's Relax VM: ``main`` on numpy arrays, outputs flattened."""

from __future__ import annotations

import numpy as np

from . import require_tvm


def device_for(kind: str):
    tvm = require_tvm()
    return tvm.cpu(0) if kind == "llvm" else tvm.cuda(0)


def run_executable(executable, kind: str, args: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``main`` on the local device; the outputs flattened in order."""
    tvm = require_tvm()
    from tvm import relax
    dev = device_for(kind)
    vm = relax.VirtualMachine(executable, dev)
    result = vm["main"](*[tvm.runtime.tensor(a, dev) for a in args])
    return [t.numpy() for t in flatten_outputs(result)]


def flatten_outputs(value) -> list:
    if hasattr(value, "numpy"):
        return [value]
    return [t for v in value for t in flatten_outputs(v)]
