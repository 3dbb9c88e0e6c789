"""The quantized weight sum of a conv: what Arm's Vela checks as "the sum of the weights".

TFLite's int8 conv weights are per-output-channel symmetric: scale_o = max|w_o| / 127 and
q = round(w / scale_o), zero point 0 (the TFLite converter's per-channel scheme, which onnx2tf
uses). Vela puts a conv on the CPU when, for some output channel, sum |q| exceeds 127 * 65536 =
8,323,072 (both of Vela 5.2's cores, measured on one-conv probes). Because the scale depends only
on that channel's own weights, the sum is known exactly from the float weights, before any
quantization runs. Splitting a conv along output channels leaves every channel's sum as it was;
an input-channel split gives every chunk its own scale, so a chunk's sum is computed on the
chunk's own weights (it can only be smaller than the whole channel's).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .plan.channels import balanced_chunks

INT8_MAX = 127


def by_output_channel(values: np.ndarray, transposed: bool = False,
                      groups: int = 1) -> np.ndarray:
    """The ONNX weight ([Cout, Cin/G, k...]; ConvTranspose [Cin, Cout/G, k...]) as
    [Cout, Cin/G, taps]: what each output channel reads."""
    w = np.asarray(values)
    if not transposed:
        return w.reshape(w.shape[0], w.shape[1], -1)
    cin, cout_g = w.shape[:2]
    per_group = w.reshape(groups, cin // groups, cout_g, -1)          # g, i, o, taps
    return per_group.transpose(0, 2, 1, 3).reshape(groups * cout_g, cin // groups, -1)


def _quantized_sums(oit: np.ndarray, axes: tuple[int, ...], zero_point) -> np.ndarray:
    """Sum of |q| over ``axes`` of an [Cout, Cin, taps] weight, each sum quantized on its own."""
    if np.issubdtype(oit.dtype, np.integer):            # already quantized (QDQ weights)
        zp = 0 if zero_point is None else np.asarray(zero_point, dtype=np.int64).reshape(-1)
        if np.size(zp) > 1:
            zp = zp.reshape(-1, 1, 1)
        return np.abs(oit.astype(np.int64) - zp).sum(axis=axes)
    a = np.abs(oit.astype(np.float64))
    peak = a.max(axis=axes, keepdims=True, initial=0.0)
    scale = np.where(peak > 0, peak / INT8_MAX, 1.0)
    # Half away from zero, as TFLite rounds; the peak itself lands on exactly 127.
    q = np.minimum(np.floor(a / scale + 0.5), INT8_MAX)
    return q.sum(axis=axes).astype(np.int64)


def per_output_channel(values: np.ndarray, transposed: bool = False, groups: int = 1,
                       zero_point=None) -> np.ndarray:
    """Sum of |int8 weight| per output channel, in output channel order."""
    return _quantized_sums(by_output_channel(values, transposed, groups), (1, 2), zero_point)


def largest(values: np.ndarray, transposed: bool = False, groups: int = 1,
            zero_point=None) -> int:
    """The largest per-output-channel sum of |int8 weight| of a conv."""
    return int(per_output_channel(values, transposed, groups, zero_point).max(initial=0))


def input_chunk_limit(values: np.ndarray, limit: int, transposed: bool = False, groups: int = 1,
                      zero_point=None,
                      chunking: Callable[[int, int], list[tuple[int, int]]] | None = None,
                      ) -> int | None:
    """The most input channels (per group) one chunk may hold so that, with the input channels
    cut by ``chunking(total, most)`` (plan.balanced_chunks by default), every chunk's every output
    channel sums within ``limit``, each chunk quantized on its own. None when a single input
    channel already breaks it (the kernel alone is too big)."""
    chunking = chunking or balanced_chunks
    oit = by_output_channel(values, transposed, groups)
    if int(_quantized_sums(oit, (2,), zero_point).max(initial=0)) > limit:
        return None
    cin_g = oit.shape[1]
    tried = set()
    for parts in range(1, cin_g + 1):
        most = -(-cin_g // parts)
        if most in tried:
            continue
        tried.add(most)
        chunks = chunking(cin_g, most)
        if all(int(_quantized_sums(oit[:, a:b], (1, 2), zero_point).max(initial=0)) <= limit
               for a, b in chunks):
            return most
    return 1
