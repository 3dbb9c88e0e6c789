"""The TVM path: import a (rewritten) ONNX model into Relax, build it for LLVM or CUDA with our
schedules, run it and check it against onnxruntime; Relax versions of the rewrite passes; our own
TIR kernels (conv as GEMM on the CPU, shift fused into the following 1x1 conv).

TVM is optional (``pip install 'convrewrite[tvm]'``): nothing here imports it at module import
time, so ``import convrewrite`` works without it; :func:`require_tvm` turns its absence into a
one-line error.
"""

from __future__ import annotations

import os

from ..errors import BadInputError

KINDS = ("llvm", "cuda")


def require_tvm():
    """Import tvm, or raise BadInputError saying how to install it.

    TVM's thread pool sizes itself to half the hardware threads (it assumes SMT pairs) unless
    TVM_NUM_THREADS says otherwise; on a machine without SMT that leaves half the cores idle, so
    the count is set to the cores this process may run on (a user's own setting wins)."""
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    try:
        import tvm
        from tvm import relax  # noqa: F401 - the Relax frontend must be there too
    except ImportError as exc:
        raise BadInputError(f"the TVM path needs apache-tvm ({exc}); install it with "
                            "pip install 'convrewrite[tvm]'") from None
    return tvm
