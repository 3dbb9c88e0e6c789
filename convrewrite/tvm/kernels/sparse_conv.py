"""A TVM TIR kernel for the sparse conv's gather-GEMM-scatter, driven by the rulebook (CPU via
LLVM, and CUDA).

The rulebook's pairs are reordered output-major (``output_major``: a counting sort, no argsort):
``row_order`` is the output row visited j-th, ``row_ptr`` [M + 1] delimits each visited row's
pairs, ``pair_in`` / ``pair_tap`` name the input row and the tap of each, in tap order within a
row. The kernel is output-stationary::

    out[row_order[j], :] = B + sum over q in [row_ptr[j], row_ptr[j + 1]) of W[tap[q]]^T @ f[in[q], :]

Where sites have many neighbours the rows are visited in ascending coordinate order, which keeps
the input rows neighbouring outputs share in cache even when the voxels are stored in random
order; where they have few, storage order reads the features (mostly the centre tap's own row)
sequentially. Measured on one thread, 64 -> 64 (benchmarks/sparse.py's data): LiDAR-like scan,
6.7 pairs per site: storage order 158 ms, space order 93 ms; 50k random voxels, 1.2 pairs per
site: 5.2 vs 12.7 ms; 20k random pixels, 1.6: 2.6 vs 3.6 ms. Hence space order from
SPACE_ORDER_PAIRS pairs per output up.

Every output row is computed by one thread (CPU: rows spread over the cores, the output channels
in AVX-512 vectors held over the whole reduction; CUDA: one block per row, a thread per output
channel), its sum in a fixed order, and written once: no scatter-add, no atomics, so the result
is the same on any number of threads and on every run. Weights are [K, Cin, Cout]
(``ops.sparse_conv.tap_weights``); the feature, weight and output dtype is float32.

On the CPU a row's accumulators are a "global"-scope buffer of the row's loop body: TVM puts such
a small constant-size buffer on the stack (an alloca the registers take over), where a "local"
one was a TVMBackendAllocWorkspace / FreeWorkspace call pair per row and vector chunk (measured
on the benchmark's U-Net, 31k voxels, one thread: 4 -> 16 channels, 27 taps 7.4 -> 2.2 ms; the
inverse 32 -> 16 conv, one pair per row, 5.3 -> 2.5 ms; same bits).

TVM is optional: nothing here imports it before a kernel is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import numpy as np

from ...sparse.rulebook import Rulebook
from .. import require_tvm
from ..machines import cpu_target, nvcc_compiler, tvm_target

LANES = 16                  # float32 lanes of an AVX-512 register
MAX_VECTORS = 4             # output-channel vectors held per row (4 x 16 accumulators)
CUDA_THREADS = 256          # most output channels one CUDA block computes at once
SPACE_ORDER_PAIRS = 3       # pairs per output from which rows are visited in coordinate order


@dataclass
class OutputMajor:
    """The rulebook's pairs grouped by output row (tap order within a row), rows in the order the
    kernel visits them."""

    row_order: np.ndarray       # [M] int64: the output row visited j-th
    row_ptr: np.ndarray         # [M + 1] int64: pairs of the j-th visited row
    pair_in: np.ndarray         # [P] int64
    pair_tap: np.ndarray        # [P] int64


def output_major(rb: Rulebook) -> OutputMajor:
    """Counting sort of the pairs by visited row. Within a tap no output row repeats, so each
    tap's pairs take the next free slot of their rows in one vectorised step."""
    m = rb.num_out
    spatial = rb.sorted_rows is not None and rb.num_pairs >= SPACE_ORDER_PAIRS * m
    order = rb.sorted_rows.astype(np.int64) if spatial else np.arange(m, dtype=np.int64)
    visit = np.empty(m, dtype=np.int64)
    visit[order] = np.arange(m, dtype=np.int64)
    counts = np.bincount(visit[rb.out_index], minlength=m) if rb.num_pairs else \
        np.zeros(m, np.int64)
    row_ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=row_ptr[1:])
    filled = row_ptr[:-1].copy()
    pair_in = np.empty(rb.num_pairs, dtype=np.int64)
    pair_tap = np.empty(rb.num_pairs, dtype=np.int64)
    for k in range(len(rb.counts)):
        src, dst = rb.pairs(k)
        if len(src) == 0:
            continue
        rows = visit[dst]
        slots = filled[rows]
        pair_in[slots] = src
        pair_tap[slots] = k
        filled[rows] += 1
    return OutputMajor(order, row_ptr, pair_in, pair_tap)


def _vector_block(cout: int) -> int:
    """Output channels per vectorised chunk: a multiple of 16 dividing Cout, at most 64 (else
    Cout itself, when it is not a multiple of 16)."""
    if cout % LANES:
        return cout
    vectors = cout // LANES
    return LANES * max(v for v in range(1, MAX_VECTORS + 1) if vectors % v == 0)


EPILOGUES = ("none", "affine", "relu", "affine_relu")


def sparse_conv_prim_func(in_channels: int, out_channels: int, taps: int, kind: str = "llvm",
                          epilogue: str = "none"):
    """The kernel as a PrimFunc ``main(features [N, Cin], weights [K, Cin, Cout], bias [Cout],
    row_order [M], row_ptr [M + 1], pair_in [P], pair_tap [P], out [M, Cout])``; N, M and P are
    symbolic. ``epilogue`` (``EPILOGUES``) applies what follows the conv to each row in registers
    before it is written: ``affine`` ``y * scale + shift`` per output channel (an inference
    BatchNorm), ``relu`` ``max(y, 0)``, ``affine_relu`` both; those take two more arguments,
    ``scale [Cout]`` and ``shift [Cout]``, after the bias (``relu`` alone too, unread)."""
    from tvm.script import tirx as T
    cin, cout, k = in_channels, out_channels, taps
    cpu = kind == "llvm"
    if epilogue not in EPILOGUES:
        raise ValueError(f"unknown sparse conv epilogue {epilogue!r}")
    if epilogue != "none":
        return _with_epilogue(cin, cout, k, cpu, epilogue)
    vb = _vector_block(cout)                        # CPU: output channels per vector chunk
    threads = min(cout, CUDA_THREADS)               # CUDA: output channels per block
    chunks = cout // vb if cpu else ceil(cout / threads)

    @T.prim_func
    def main(f_h: T.handle, w_h: T.handle, b_h: T.handle, ord_h: T.handle, ptr_h: T.handle,
             pin_h: T.handle, ptap_h: T.handle, out_h: T.handle):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        n, m, p = T.int64(), T.int64(), T.int64()
        F = T.match_buffer(f_h, (n, cin), "float32")
        W = T.match_buffer(w_h, (k, cin, cout), "float32")
        B = T.match_buffer(b_h, (cout,), "float32")
        ORD = T.match_buffer(ord_h, (m,), "int64")
        PTR = T.match_buffer(ptr_h, (m + T.int64(1),), "int64")
        PIN = T.match_buffer(pin_h, (p,), "int64")
        PTAP = T.match_buffer(ptap_h, (p,), "int64")
        OUT = T.match_buffer(out_h, (m, cout), "float32")
        if cpu:         # a Python bool: one of the two loop nests is generated
            for o in T.parallel(m):
                for c in T.serial(chunks):
                    acc = T.alloc_buffer((vb,), "float32", scope="global")  # stack (below)
                    for v in T.vectorized(vb):
                        acc[v] = B[c * vb + v]
                    for q in T.serial(PTR[o], PTR[o + T.int64(1)]):
                        for ci in T.unroll(cin):
                            for v in T.vectorized(vb):
                                acc[v] = acc[v] + F[PIN[q], ci] * W[PTAP[q], ci, c * vb + v]
                    for v in T.vectorized(vb):
                        OUT[ORD[o], c * vb + v] = acc[v]
        else:
            for o in T.thread_binding(m, thread="blockIdx.x"):
                for c in T.serial(chunks):
                    for t in T.thread_binding(threads, thread="threadIdx.x"):
                        if c * threads + t < cout:
                            acc = T.alloc_buffer((1,), "float32", scope="local")
                            acc[0] = B[c * threads + t]
                            for q in T.serial(PTR[o], PTR[o + T.int64(1)]):
                                for ci in T.serial(cin):
                                    acc[0] = acc[0] + F[PIN[q], ci] * W[PTAP[q], ci,
                                                                           c * threads + t]
                            OUT[ORD[o], c * threads + t] = acc[0]

    return main


def _with_epilogue(cin: int, cout: int, k: int, cpu: bool, epilogue: str):
    """``sparse_conv_prim_func`` with scale / shift arguments and the epilogue at write-back (the
    same loop nests; the epilogue is chosen while the script is parsed)."""
    from tvm.script import tirx as T
    affine = epilogue in ("affine", "affine_relu")
    relu = epilogue in ("relu", "affine_relu")
    vb = _vector_block(cout)
    threads = min(cout, CUDA_THREADS)
    chunks = cout // vb if cpu else ceil(cout / threads)

    @T.prim_func
    def main(f_h: T.handle, w_h: T.handle, b_h: T.handle, s_h: T.handle, t_h: T.handle,
             ord_h: T.handle, ptr_h: T.handle, pin_h: T.handle, ptap_h: T.handle,
             out_h: T.handle):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        n, m, p = T.int64(), T.int64(), T.int64()
        F = T.match_buffer(f_h, (n, cin), "float32")
        W = T.match_buffer(w_h, (k, cin, cout), "float32")
        B = T.match_buffer(b_h, (cout,), "float32")
        S = T.match_buffer(s_h, (cout,), "float32")
        SH = T.match_buffer(t_h, (cout,), "float32")
        ORD = T.match_buffer(ord_h, (m,), "int64")
        PTR = T.match_buffer(ptr_h, (m + T.int64(1),), "int64")
        PIN = T.match_buffer(pin_h, (p,), "int64")
        PTAP = T.match_buffer(ptap_h, (p,), "int64")
        OUT = T.match_buffer(out_h, (m, cout), "float32")
        if cpu:
            for o in T.parallel(m):
                for c in T.serial(chunks):
                    acc = T.alloc_buffer((vb,), "float32", scope="global")  # stack
                    for v in T.vectorized(vb):
                        acc[v] = B[c * vb + v]
                    for q in T.serial(PTR[o], PTR[o + T.int64(1)]):
                        for ci in T.unroll(cin):
                            for v in T.vectorized(vb):
                                acc[v] = acc[v] + F[PIN[q], ci] * W[PTAP[q], ci, c * vb + v]
                    if affine:
                        for v in T.vectorized(vb):
                            acc[v] = acc[v] * S[c * vb + v] + SH[c * vb + v]
                    if relu:
                        for v in T.vectorized(vb):
                            acc[v] = T.max(acc[v], T.float32(0))
                    for v in T.vectorized(vb):
                        OUT[ORD[o], c * vb + v] = acc[v]
        else:
            for o in T.thread_binding(m, thread="blockIdx.x"):
                for c in T.serial(chunks):
                    for t in T.thread_binding(threads, thread="threadIdx.x"):
                        if c * threads + t < cout:
                            acc = T.alloc_buffer((1,), "float32", scope="local")
                            acc[0] = B[c * threads + t]
                            for q in T.serial(PTR[o], PTR[o + T.int64(1)]):
                                for ci in T.serial(cin):
                                    acc[0] = acc[0] + F[PIN[q], ci] * W[PTAP[q], ci,
                                                                           c * threads + t]
                            if affine:
                                acc[0] = acc[0] * S[c * threads + t] + SH[c * threads + t]
                            if relu:
                                acc[0] = T.max(acc[0], T.float32(0))
                            OUT[ORD[o], c * threads + t] = acc[0]

    return main


class SparseConvKernel:
    """The compiled kernel for one (Cin, Cout, K): ``kernel(features, rulebook, taps, bias)``."""

    def __init__(self, in_channels: int, out_channels: int, taps: int, kind: str = "llvm"):
        tvm = require_tvm()
        self.kind, self.shape = kind, (in_channels, out_channels, taps)
        mod = tvm.IRModule({"main": sparse_conv_prim_func(in_channels, out_channels, taps, kind)})
        if kind == "llvm":
            self.lib = tvm.compile(mod, target=cpu_target())
        else:
            with nvcc_compiler():
                self.lib = tvm.compile(mod, target=tvm_target(kind))
        self.device = tvm.cpu(0) if kind == "llvm" else tvm.cuda(0)

    def source(self) -> str:
        """The generated device code (CUDA C for ``cuda``)."""
        mods = self.lib.mod.imports if self.kind != "llvm" else []
        return mods[0].inspect_source() if mods else self.lib.mod.inspect_source()

    def tensors(self, features: np.ndarray, layout: OutputMajor, taps: np.ndarray,
                bias: np.ndarray | None = None) -> list:
        """The kernel's arguments on its device (reusable across calls, for timing)."""
        import tvm
        cout = self.shape[1]
        b = np.zeros(cout, np.float32) if bias is None else np.asarray(bias, np.float32)
        host = [np.ascontiguousarray(features, np.float32), np.ascontiguousarray(taps, np.float32),
                b, layout.row_order, layout.row_ptr, layout.pair_in, layout.pair_tap,
                np.zeros((len(layout.row_ptr) - 1, cout), np.float32)]
        return [tvm.runtime.tensor(x, self.device) for x in host]

    def run(self, args: list) -> None:
        self.lib["main"](*args)

    def __call__(self, features: np.ndarray, rulebook: Rulebook, taps: np.ndarray,
                 bias: np.ndarray | None = None) -> np.ndarray:
        args = self.tensors(features, output_major(rulebook), taps, bias)
        self.run(args)
        return args[-1].numpy()
