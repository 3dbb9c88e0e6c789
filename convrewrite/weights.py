"""Weight rearrangements the lowerings share, on numpy arrays: the same math for every IR."""

from __future__ import annotations

import numpy as np


def block_diagonal(values: np.ndarray, groups: int, fill=0) -> np.ndarray:
    """[groups * o, i, k...] grouped weights as one dense [groups * o, groups * i, k...]
    weight, ``fill`` off the diagonal blocks."""
    out_channels, per_group, *kernel = values.shape
    o = out_channels // groups
    dense = np.zeros((out_channels, groups * per_group, *kernel), dtype=values.dtype)
    dense[...] = fill
    for g in range(groups):
        dense[g * o:(g + 1) * o, g * per_group:(g + 1) * per_group] = values[g * o:(g + 1) * o]
    return dense


def selection_weight(src: np.ndarray, channels: int, rank: int, dtype) -> np.ndarray:
    """The 1x1 one-hot conv weight computing ``x[:, src]`` from ``channels`` input channels."""
    weight = np.zeros((len(src), channels, *[1] * rank), dtype=dtype)
    weight[(np.arange(len(src)), np.asarray(src), *[0] * rank)] = 1
    return weight


def absorb_selection(values: np.ndarray, channels: int, src: np.ndarray) -> np.ndarray:
    """A dense conv weight reading ``x[:, src]`` rewritten to read ``x`` (``channels`` wide):
    input channel src[k] gets column k, summed where a channel is picked twice, zero where it
    is not picked."""
    wide = np.zeros((values.shape[0], channels, *values.shape[2:]), dtype=values.dtype)
    np.add.at(wide, (slice(None), np.asarray(src)), values)
    return wide
