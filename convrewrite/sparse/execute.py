"""The numpy executor: gather, one GEMM per kernel tap, scatter-add -- driven by the rulebook.

Each tap's pairs name every output row at most once, so ``out[rows] += products`` never adds twice
into a row: the result does not depend on the thread count and is the same on every run. Taps are
summed in order (the submanifold centre tap, which maps every site onto itself, first)."""

from __future__ import annotations

import numpy as np

from .rulebook import Rulebook, build_rulebook
from ..ops.sparse_conv import SparseConvAttrs, check_features, check_weight, tap_weights


def execute(rulebook: Rulebook, features: np.ndarray, taps: np.ndarray,
            bias: np.ndarray | None = None) -> np.ndarray:
    """Output features [M, Cout]; ``taps`` is [K, Cin, Cout] (``ops.sparse_conv.tap_weights``). float16
    accumulates in float32."""
    dtype = features.dtype
    acc = np.float32 if dtype == np.float16 else dtype
    f = features.astype(acc, copy=False)
    w = taps.astype(acc, copy=False)
    centre = rulebook.identity_tap
    if centre is not None:
        out = f @ w[centre]
    else:
        out = np.zeros((rulebook.num_out, w.shape[2]), dtype=acc)
    for k in range(len(w)):
        if k == centre:
            continue
        i, o = rulebook.pairs(k)
        if len(i):
            out[o] += f[i] @ w[k]
    if bias is not None:
        out += np.asarray(bias, dtype=acc)
    return out.astype(dtype, copy=False)


def sparse_conv(features, coords, weight, bias=None, *, attrs: SparseConvAttrs,
                rulebook: Rulebook | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SparseConv in numpy: (out_features, out_coordinates). Inputs are validated (dtypes, shapes,
    coordinates in range and distinct) with a SparseConvError naming what is wrong."""
    features = np.asarray(features)
    rb = rulebook if rulebook is not None else build_rulebook(coords, attrs)
    check_features(features, rb.num_in)
    check_weight(weight, attrs, features.shape[1])
    return execute(rb, features, tap_weights(weight), bias), rb.out_coords
