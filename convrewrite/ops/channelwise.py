"""The ``ChannelwiseConv`` op (ChannelNets, Gao et al. 2018): one shared 1-D kernel slides over
the channel axis, the same at every pixel; it replaces a wide 1x1 conv with dc weights.

Schema (domain ``ai.convrewrite``, version 1):
  inputs  X: [N, C, *spatial] (float); W: [k], the shared kernel; B (optional): [1]
  output  Y: [N, Co, *spatial], Co = (C + pads[0] + pads[1] - k) // stride + 1
  attributes:
    stride  int >= 1, default 1    -- the step over channels
    pads    [begin, end], default [0, 0]  -- zero channels added before and after
    Y[n, o, p] = B + sum_j W[j] * Xpad[n, o * stride + j, p]
where Xpad is X with ``pads`` zero channels around it (a cross-correlation, like Conv).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import BadInputError
from . import register_reference

OP_TYPE = "ChannelwiseConv"


def channelwise_attrs(attrs: dict) -> tuple[int, tuple[int, int]]:
    """(stride, pads) with defaults, validated."""
    stride = int(attrs.get("stride", 1))
    pads = tuple(int(p) for p in attrs.get("pads", (0, 0)))
    if stride < 1:
        raise ValueError(f"ChannelwiseConv stride must be >= 1, got {stride}")
    if len(pads) != 2 or min(pads) < 0:
        raise ValueError(f"ChannelwiseConv pads must be two non-negative ints, got {list(pads)}")
    return stride, pads


def channelwise_reference(x: np.ndarray, w: np.ndarray, b=None, stride: int = 1,
                          pads=(0, 0)) -> np.ndarray:
    """numpy reference, in float64 then cast back."""
    xp = np.pad(x.astype(np.float64), [(0, 0), (pads[0], pads[1])] + [(0, 0)] * (x.ndim - 2))
    k = len(w)
    out_channels = (xp.shape[1] - k) // stride + 1
    y = np.zeros((x.shape[0], out_channels, *x.shape[2:]))
    for j in range(k):
        y += w[j] * xp[:, j:j + (out_channels - 1) * stride + 1:stride]
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape(-1)[0]
    return y.astype(x.dtype)


def banded_weight(channels: int, w: np.ndarray, stride: int, pads) -> np.ndarray:
    """The [Co, C] matrix of the same map: what a 1x1 conv needs to compute it."""
    k = len(w)
    out_channels = (channels + pads[0] + pads[1] - k) // stride + 1
    dense = np.zeros((out_channels, channels), dtype=w.dtype)
    for o in range(out_channels):
        for j in range(k):
            c = o * stride + j - pads[0]
            if 0 <= c < channels:
                dense[o, c] = w[j]
    return dense


@register_reference(OP_TYPE)
def standard_form(node: gs.Node, names) -> list[gs.Node]:
    try:
        stride, pads = channelwise_attrs(node.attrs)
    except ValueError as exc:
        raise BadInputError(f"ChannelwiseConv {node.name!r}: {exc}") from None
    x, w = node.inputs[0], node.inputs[1]
    bias = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2].name else []
    x5 = gs.Variable(names(f"{node.name}/x5"), dtype=x.dtype)
    w5 = gs.Variable(names(f"{node.name}/w5"), dtype=x.dtype)
    y5 = gs.Variable(names(f"{node.name}/y5"), dtype=x.dtype)
    rank = len(x.shape) - 2 if x.shape is not None else 2
    one = gs.Constant(names(f"{node.name}/axis1"), np.array([1], dtype=np.int64))
    w_shape = gs.Constant(names(f"{node.name}/w_shape"),
                          np.array([1, 1, -1] + [1] * rank, dtype=np.int64))
    return [
        gs.Node("Unsqueeze", names(f"{node.name}/unsqueeze"), {}, [x, one], [x5]),
        gs.Node("Reshape", names(f"{node.name}/w_reshape"), {}, [w, w_shape], [w5]),
        gs.Node("Conv", names(f"{node.name}/reference"),
                {"strides": [stride] + [1] * rank, "pads": [pads[0]] + [0] * rank + [pads[1]]
                 + [0] * rank}, [x5, w5, *bias], [y5]),
        gs.Node("Squeeze", names(f"{node.name}/squeeze"), {}, [y5, one], list(node.outputs)),
    ]
