"""The ``Shift`` op (ShiftNet, Wu et al. 2018): each channel is translated by one offset of a k×k
window, zero filled; zero FLOPs, zero parameters.

Schema (domain ``ai.convrewrite``, version 1):
  input  X: [N, C, H, W] (float)
  output Y: same shape and dtype
  attributes:
    kernel_size  int, odd, default 3   -- the window whose k² offsets the channels are spread over
    dilation     int, >= 1, default 1  -- the offsets are multiplied by it

Channel assignment, as in the paper: the C channels are split evenly, in plain order, into k² groups
of ``C // k²`` channels; group d gets offset (dy, dx) = ((d // k - k // 2) * dilation,
(d % k - k // 2) * dilation); the ``C mod k²`` channels left over are not shifted.
    Y[n, c, y, x] = X[n, c, y + dy(c), x + dx(c)]   (0 outside the map)
which is a depthwise conv with a one-hot k×k kernel (the 1 at tap (d // k, d % k)), pads
``dilation * (k // 2)`` and that dilation.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import BadInputError
from . import register_reference

OP_TYPE = "Shift"


def shift_offsets(channels: int, kernel_size: int = 3, dilation: int = 1) -> np.ndarray:
    """[C, 2] int64 (dy, dx) per channel, by the paper's even split with an unshifted remainder."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"Shift kernel_size must be odd and positive, got {kernel_size}")
    if dilation < 1:
        raise ValueError(f"Shift dilation must be >= 1, got {dilation}")
    k2 = kernel_size * kernel_size
    per_group = channels // k2
    offsets = np.zeros((channels, 2), dtype=np.int64)
    if per_group == 0:
        return offsets
    direction = np.arange(per_group * k2) // per_group
    half = kernel_size // 2
    offsets[: per_group * k2, 0] = (direction // kernel_size - half) * dilation
    offsets[: per_group * k2, 1] = (direction % kernel_size - half) * dilation
    return offsets


def shift_reference(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """numpy reference of Y[n, c, y, x] = X[n, c, y + dy, x + dx], zero outside."""
    out = np.zeros_like(x)
    height, width = x.shape[2], x.shape[3]
    for c, (dy, dx) in enumerate(offsets.tolist()):
        ys, yd = max(0, dy), max(0, -dy)
        xs, xd = max(0, dx), max(0, -dx)
        h, w = height - abs(dy), width - abs(dx)
        if h > 0 and w > 0:
            out[:, c, yd:yd + h, xd:xd + w] = x[:, c, ys:ys + h, xs:xs + w]
    return out


def one_hot_depthwise_weight(offsets: np.ndarray, kernel, dilation, dtype=np.float32) -> np.ndarray:
    """[C, 1, *kernel] weights of the depthwise conv equal to the shift, with pads
    ``dilation * (kernel // 2)`` on each side; ``kernel`` and ``dilation`` are ints or one per
    spatial axis (offsets are [C, axes])."""
    offsets = np.asarray(offsets)
    rank = offsets.shape[1]
    kernel = (kernel,) * rank if isinstance(kernel, int) else tuple(kernel)
    dilation = (dilation,) * rank if isinstance(dilation, int) else tuple(dilation)
    weight = np.zeros((len(offsets), 1, *kernel), dtype=dtype)
    taps = offsets // np.asarray(dilation) + np.asarray(kernel) // 2
    weight[(np.arange(len(offsets)), 0, *taps.T)] = 1
    return weight


def one_hot_offsets(weight: np.ndarray, pads_begin, dilation) -> np.ndarray | None:
    """The per-channel offsets of a depthwise weight [C, 1, *k] whose kernels are each a single
    1 (a shift), or None when it is not one."""
    if weight.ndim < 3 or weight.shape[1] != 1:
        return None
    flat = weight.reshape(weight.shape[0], -1)
    if not (np.count_nonzero(flat, axis=1) == 1).all() or not (flat.max(axis=1) == 1).all():
        return None
    taps = np.stack(np.unravel_index(flat.argmax(axis=1), weight.shape[2:]), axis=1)
    return taps * np.asarray(dilation) - np.asarray(pads_begin)


@register_reference(OP_TYPE)
def standard_form(node: gs.Node, names) -> list[gs.Node]:
    x = node.inputs[0]
    channels = x.shape[1] if x.shape is not None else None
    if not isinstance(channels, int):
        raise BadInputError(f"Shift {node.name!r}: its input's channel count is not static")
    k, d = int(node.attrs.get("kernel_size", 3)), int(node.attrs.get("dilation", 1))
    try:
        offsets = shift_offsets(channels, k, d)
    except ValueError as exc:
        raise BadInputError(f"Shift {node.name!r}: {exc}") from None
    dtype = np.dtype(x.dtype) if x.dtype is not None else np.float32
    weight = gs.Constant(names(f"{node.name}/reference.w"),
                         one_hot_depthwise_weight(offsets, k, d, dtype))
    pad = d * (k // 2)
    return [gs.Node("Conv", names(f"{node.name}/reference"),
                    {"group": channels, "kernel_shape": [k, k], "dilations": [d, d],
                     "pads": [pad] * 4}, [x, weight], list(node.outputs))]
