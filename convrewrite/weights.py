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


def respaced(values: np.ndarray, kernel: tuple[int, ...], steps: tuple[int, ...] | None = None,
             fill=0) -> np.ndarray:
    """The same taps in a larger kernel: tap i lands at ``i * step`` and every other position
    holds ``fill`` (broadcast against the result). Steps of 1 zero-extend the kernel at its end;
    larger steps write a dilation into it."""
    steps = steps or (1,) * len(kernel)
    out = np.zeros((*values.shape[:2], *kernel), dtype=values.dtype)
    out[...] = fill
    taps = tuple(slice(0, (n - 1) * step + 1, step) for n, step in zip(values.shape[2:], steps))
    out[(slice(None), slice(None), *taps)] = values
    return out


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


def conv_layout_views(shape: tuple[int, ...], groups: int) -> list[tuple[str, tuple, tuple]]:
    """A ConvTranspose weight of ``shape`` [Cin, Cout/g, k...] as a Conv weight
    [Cout, Cin/g, k...] (taps unflipped; the flip is a reversed slice), as layout ops on a tensor
    known only at run time: ("Reshape", output shape, ()) or ("Transpose", output shape, perm).
    The in/out axes swap per group: one Transpose for one group, Reshape-Transpose-Reshape for
    more; where a group has one input or one output channel, the swap keeps the element order
    and a Reshape is all (none when the shape stays)."""
    cin, cout_g, *kernel = shape
    cin_g = cin // groups
    out = (groups * cout_g, cin_g, *kernel)
    if cin_g == 1 or cout_g == 1:
        return [] if tuple(shape) == out else [("Reshape", out, ())]
    if groups == 1:
        return [("Transpose", out, (1, 0, *range(2, len(shape))))]
    return [("Reshape", (groups, cin_g, cout_g, *kernel), ()),
            ("Transpose", (groups, cout_g, cin_g, *kernel), (0, 2, 1, *range(3, len(shape) + 1))),
            ("Reshape", out, ())]


def runtime_conv_layout_ops(shape: tuple[int, ...], groups: int) -> list[str]:
    """The ops ``conv_layout_views`` emits, and the Slice that flips the kernel (reversed, so
    a kernel of one tap needs none): what a transposed conv's weight known only at run time
    needs from the target to become a Conv weight."""
    ops = [op for op, _, _ in conv_layout_views(shape, groups)]
    return sorted(set(ops + (["Slice"] if any(k > 1 for k in shape[2:]) else [])))
