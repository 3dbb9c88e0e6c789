"""The quantized weight sum of a conv: what Arm's Vela checks as "the sum of the weights".

TFLite's int8 conv weights are per-output-channel symmetric: scale_o = max|w_o| / 127 and
q = round(w / scale_o), zero point 0 (the TFLite converter's per-channel scheme, which onnx2tf
uses). Vela puts a conv on the CPU when, for some output channel, sum |q| exceeds 127 * 65536 =
8,323,072 (both of Vela 5.2's cores, measured on one-conv probes). Because the scale depends only
on that channel's own weights, the sum is known exactly from the float weights, before any
quantization runs. Splitting a conv along output channels leaves every channel's sum as it was;
an input-channel split gives every chunk its own scale, so each sub-conv's sum is computed again
on its own weights (a chunk without the channel's largest weight is quantized at a finer scale).
"""

from __future__ import annotations

import weakref

import numpy as np

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


_REMEMBERED: dict[tuple, tuple[weakref.ref, int]] = {}


def remembered_largest(values: np.ndarray, transposed: bool = False, groups: int = 1,
                       zero_point=None) -> int:
    """``largest``, remembered per weight array while that array lives: a conv is described many
    times per rewrite (every round, every pass), and its weight array never changes in place
    (passes cut new arrays)."""
    zp = None if zero_point is None else np.asarray(zero_point)
    key = (id(values), transposed, groups,
           None if zp is None else (zp.dtype.str, zp.shape, zp.tobytes()))
    hit = _REMEMBERED.get(key)
    if hit is not None and hit[0]() is values:
        return hit[1]
    result = largest(values, transposed, groups, zero_point)
    try:
        ref = weakref.ref(values, lambda _, k=key: _REMEMBERED.pop(k, None))
    except TypeError:               # not an ndarray: nothing to remember it by
        return result
    _REMEMBERED[key] = (ref, result)
    return result
