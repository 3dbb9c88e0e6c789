"""ConvSpec: one convolution described without reference to any IR.

Legality checks and planners only look at a ConvSpec, so the same decisions serve the ONNX and the
Relax emitters. Unknown (dynamic) extents are ``None``; checks that need them say "unknown" rather
than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")
INTEGER_CONVS = ("QLinearConv", "ConvInteger")


def dims_text(values) -> str:
    """Extents as reports write them: (3, 3) -> "3x3"."""
    return "x".join(map(str, values))


class _OnFirstRead:
    """A field given as a value or as a function that computes it, called on first read (and
    kept): ``spec_of`` describes every conv many times per rewrite, and summing its quantized
    weights each time (``weight_sum``) cost a fifth of the rewrite where no rule reads it."""

    def __set_name__(self, owner, name: str):
        self.name = name

    def __get__(self, spec, owner=None):
        if spec is None:
            return None                         # the field's default
        value = spec.__dict__[self.name]
        if callable(value):
            value = spec.__dict__[self.name] = value()
        return value

    def __set__(self, spec, value) -> None:
        spec.__dict__[self.name] = value


@dataclass(frozen=True)
class ConvSpec:
    name: str
    op_type: str                                   # one of CONV_OPS
    in_channels: int
    out_channels: int
    groups: int
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]                          # begins then ends, ONNX order
    auto_pad: str = "NOTSET"
    output_padding: tuple[int, ...] = ()
    # ConvTranspose's ``output_shape`` attribute (its spatial extents), which overrides pads
    output_size: tuple[int, ...] | None = None
    input_shape: tuple[int | None, ...] | None = None    # N, C, spatial...
    output_shape: tuple[int | None, ...] | None = None
    dtype: str = "float32"
    has_bias: bool = False
    constant_weight: bool = True                   # False: the weight is computed in the graph
    constant_bias: bool = True                     # False: the bias is computed in the graph
    # The largest per-output-channel sum of |int8 weight| under TFLite's per-channel symmetric
    # quantization (see weight_sum.py); None when the weight is not a constant. May be given as a
    # function of no arguments, computed on first read.
    weight_sum: "int | None | Callable[[], int | None]" = _OnFirstRead()
    # Integer convs: the distinct values of the weight's zero point (one value for per-tensor and
    # for symmetric per-channel weights; () when it is computed in the graph), and whether the
    # scales are constants. An input-channel split of a QLinearConv needs both: its int32 partial
    # sums come from ConvInteger (one weight zero point) and are requantized with the scales.
    weight_zero_points: tuple[int, ...] = (0,)
    constant_scales: bool = True

    @property
    def rank(self) -> int:
        return len(self.kernel_shape)

    @property
    def transposed(self) -> bool:
        return self.op_type == "ConvTranspose"

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def group_form(self) -> str:
        """``regular`` (groups = 1), ``depthwise`` (one input channel per group) or ``grouped``."""
        if self.groups == 1:
            return "regular"
        if self.in_per_group == 1:
            return "depthwise"
        return "grouped"

    @property
    def depth_multiplier(self) -> int:
        return self.out_per_group if self.group_form == "depthwise" else 1

    @property
    def dilated_kernel(self) -> tuple[int, ...]:
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_shape, self.dilations))

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.transposed:
            return (self.in_channels, self.out_per_group, *self.kernel_shape)
        return (self.out_channels, self.in_per_group, *self.kernel_shape)

    @property
    def params(self) -> int:
        return prod(self.weight_shape) + (self.out_channels if self.has_bias else 0)

    @property
    def macs(self) -> int | None:
        """Multiply-accumulates for one run; None when a spatial extent is dynamic."""
        shape = self.input_shape if self.transposed else self.output_shape
        if shape is None or any(d is None for d in shape[1:]):
            return None
        shape = (shape[0] or 1, *shape[1:])       # a dynamic batch counts as one sample
        taps = prod(self.kernel_shape)
        if self.transposed:        # every input pixel scatters into out_per_group * taps outputs
            return shape[0] * prod(shape[2:]) * self.in_channels * self.out_per_group * taps
        return shape[0] * prod(shape[2:]) * self.out_channels * self.in_per_group * taps

    def describe(self) -> str:
        k = dims_text(self.kernel_shape)
        g = f" g{self.groups}" if self.groups > 1 else ""
        return f"{self.op_type} {self.in_channels}->{self.out_channels} k{k}{g}"


def effective_pads(spec: ConvSpec) -> tuple[int, ...] | None:
    """Explicit begin/end pads, resolving auto_pad where the input shape allows it."""
    if spec.auto_pad in ("NOTSET", ""):
        return spec.pads or (0,) * (2 * spec.rank)
    if spec.auto_pad == "VALID":
        return (0,) * (2 * spec.rank)
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return None
    begins, ends = [], []
    for size, k, s, d in zip(spec.input_shape[2:], spec.kernel_shape, spec.strides, spec.dilations):
        eff = (k - 1) * d + 1
        if spec.transposed:
            total = max(0, eff - s)
        else:
            out = -(-size // s)
            total = max(0, (out - 1) * s + eff - size)
        small, big = total // 2, total - total // 2
        if spec.auto_pad == "SAME_UPPER":
            begins.append(small), ends.append(big)
        else:
            begins.append(big), ends.append(small)
    return (*begins, *ends)
