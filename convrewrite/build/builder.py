"""The Builder interface every lowering's emitter is written against, once for both IRs.

An emitter gets a Builder and the ``ConvSite`` it replaces and returns the tensor that stands for
the conv's output. Tensors are whatever the IR uses (an onnx-graphsurgeon tensor, a Relax
expression); the emitter never looks inside them, only passes them on and asks for ``shape``.
Names are readable stems (``conv5/in_split``): the ONNX backend makes them the node and tensor
names (unique, deterministic), the Relax backend uses them as variable name hints. ``out``, where
an op takes it, is the site's own output (``site.y``): the ONNX backend writes that tensor so the
graph keeps its name; the Relax backend ignores it (the returned expression replaces the call).

Weights are ``Weight`` objects (numpy values plus how the IR holds them: a QDQ weight's scale and
zero point in ONNX, a computed expression in Relax); their rearrangements (``take_rows``,
``block_diagonal``, ``respaced``, ``reshaped``, ``with_values``) are numpy on a constant, and
steps in the graph on a computed weight where the IR can take them (a Relax expression is
sliced, zero-extended, reshaped or cut into taps; what needs its values declines);
``Builder.weight`` materialises a slice of one as a tensor, ``Builder.weight_taps`` its taps
along the first kernel axis.

The two backends: ``build.onnx.OnnxBuilder`` and ``build.relax.RelaxBuilder``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..conv import ConvSpec


@dataclass
class ConvSite:
    """The conv a lowering replaces, in IR-neutral terms."""

    name: str                   # the conv's name: the stem of every name the emitter derives
    spec: ConvSpec
    x: Any                      # its data input
    y: Any                      # its output (ONNX: written by the replacement; Relax: None)
    weight: Any                 # a Weight
    bias: Any = None            # its bias tensor, or None
    attrs: dict = field(default_factory=dict)   # its attributes, in ONNX's spelling
    # an integer conv's quantization parameters by role (x_scale, x_zero_point, w_scale,
    # w_zero_point, y_scale, y_zero_point; ``build.onnx_read.QUANT_POSITIONS``)
    quant: dict = field(default_factory=dict)
    # the weight operand as the conv reads it: what a lowering that keeps the weight whole passes
    # on (``Builder.weight`` makes a slice of it, a new tensor)
    weight_operand: Any = None

    def conv_attrs(self, **changes) -> dict:
        """The conv's attributes with ``changes`` (explicit pads drop auto_pad; the kernel shape
        is always spelled out): what a lowering that keeps the conv, changed, gives its copy."""
        attrs = dict(self.attrs)
        attrs.update(changes)
        if "pads" in changes:
            attrs.pop("auto_pad", None)
        attrs.setdefault("kernel_shape", list(self.spec.kernel_shape))
        return attrs

    @property
    def pad_value(self):
        """What the conv pads with, as ``Builder.pad_spatial`` takes it: None (zeros) for a float
        conv, an integer conv's input zero point (its real zero)."""
        return self.quant.get("x_zero_point")

    def operands(self, x, w=None) -> list:
        """The conv's inputs in its op's order with ``x`` as data input and ``w`` (default: the
        weight operand) as weight: a Conv's [x, w, bias], a QLinearConv's [x, x_scale,
        x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias], a ConvInteger's
        [x, w, x_zero_point, w_zero_point] (optional ones as the node holds them)."""
        w = self.weight_operand if w is None else w
        bias = [self.bias] if self.bias is not None else []
        q = self.quant
        if self.spec.op_type == "QLinearConv":
            return [x, q["x_scale"], q["x_zero_point"], w, q["w_scale"], q["w_zero_point"],
                    q["y_scale"], q["y_zero_point"], *bias]
        if self.spec.op_type == "ConvInteger":
            return [x, w, *(q[r] for r in ("x_zero_point", "w_zero_point") if r in q)]
        return [x, w, *bias]


class Builder(Protocol):
    """What an emitter may build. Every method returns the tensor it makes (``out`` when given)."""

    def fresh(self, wanted: str) -> str: ...

    def shape(self, x) -> list | None: ...

    def conv(self, site: ConvSite, inputs: list, name: str, attrs: dict, out=None,
             shape: list | None = None, op_type: str | None = None): ...

    def weight(self, weight, index: tuple, stem: str): ...

    def weight_taps(self, weight, stems: list, use_split: bool) -> list: ...

    def bias(self, site: ConvSite, start: int, stop: int, stem: str): ...

    def bias_column(self, site: ConvSite, stem: str): ...

    def add(self, x, y, name: str, out=None): ...

    def channel_param(self, param, start: int, stop: int, name: str): ...

    def uniform_param(self, param, name: str): ...

    def requantize(self, acc, site: ConvSite, start: int, stop: int, stem: str, out=None): ...

    def weight_zero_points(self, site: ConvSite): ...

    def conv_integer_centred(self, site: ConvSite, x, w, start: int, stop: int, stem: str,
                             attrs: dict, shape: list | None = None): ...

    def sum(self, terms: list, accumulate: str, stem: str, out=None): ...

    def concat(self, xs: list, axis: int, name: str, out=None,
               shape: list | None = None): ...

    def split_channels(self, x, ranges: list, stem: str, use_split: bool,
                       slice_stem: str) -> list: ...

    def split_axis(self, x, axis: int, ranges: list, stem: str, use_split: bool,
                   slice_stem: str) -> list: ...

    def slice_axes(self, x, axes: list, starts: list, ends: list, steps: list, stem: str,
                   out=None): ...

    def pad_spatial(self, x, begins: list, ends: list, stem: str, out=None, value=None): ...

    def reshape(self, x, shape: list, name: str, shape_name: str, out=None): ...

    def transpose(self, x, perm: list, name: str, out=None): ...

    def take_channels(self, x, source, channels: int, rank: int, use_gather: bool, stem: str,
                      out_stem: str): ...

    def depth_to_space(self, x, blocksize: int, name: str, out=None): ...

    def space_to_depth(self, x, blocksize: int, name: str, out=None): ...
