"""Integer split: a QLinearConv or ConvInteger too wide for the engine, cut on the channel plan
``channel_split`` uses (``plan.channels``), with integer arithmetic that stays exact.

* Output chunks (max_out_channels, and whole groups): one conv of the same op per chunk, its rows
  of the weight, of the per-channel weight scale and zero point, and of the bias; Concat.
* Input chunks of a ConvInteger (max_in_channels): the chunks' int32 results summed with Add.
* Input chunks of a QLinearConv: the output is requantized from the whole sum, so each chunk is a
  ConvInteger (int32; the QLinearConv's input and weight zero points), the chunks summed with
  Add, then the bias added and the sum requantized once (``Builder.requantize``: Cast, Mul by
  x_scale * w_scale / y_scale, QuantizeLinear). ConvInteger takes one weight zero point: where
  the weight's differ per channel, each chunk is ConvInteger with zero point 0 less w_zp[c]
  times a one-channel ConvInteger of ones (the window's sum of centred inputs), still integer.

Measured on onnxruntime 1.32 CPU (benchmarks/integer_split_exactness.py; uint8 and int8
activations, uint8 and int8 weights, per-tensor and per-channel scales, one or differing weight
zero points, with and without bias, 12 and 600 input channels, basic and all optimisation: 176
configurations): every form differs from the original by 0 LSB, so every record is "exact" and
verified with no tolerance. The machine had AVX512-VNNI; on AVX2 without VNNI onnxruntime's u8s8
kernels may saturate int16 pair sums (its documented reduce_range caveat), which a split could
pair differently: the exact comparison would then report a mismatch, never pass it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..build.builder import Builder, ConvSite
from ..conv import ConvSpec
from ..decline import Decline
from ..plan.channels import plan_channel_split
from ..rules import rules_named
from ..target import Target
from .channel_split import ChannelEmit, channel_emit, emit_channel_plan
from .contract import Lowering, Planned, missing_ops, register

REQUANTIZE_OPS = frozenset({"ConvInteger", "Add", "Cast", "Mul", "QuantizeLinear"})


@dataclass(frozen=True)
class IntegerEmit:
    split: ChannelEmit
    requantize: bool            # a QLinearConv's block that sums input chunks is requantized


@register
class IntegerSplit(Lowering):
    name = "integer_split"
    fixes = rules_named("max_in_channels", "max_out_channels")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        if spec.op_type not in ("QLinearConv", "ConvInteger"):
            return Decline(f"{spec.op_type} is not an integer conv (channel_split splits it)")
        split = channel_emit(plan_channel_split(spec, target), target)
        if isinstance(split, Decline):
            return split
        requantize = spec.op_type == "QLinearConv" and split.plan.reassociates
        strategy = split.plan.strategy
        if requantize:
            how = plan_requantize(spec, target, "an input-channel split")
            if isinstance(how, Decline):
                return how
            strategy += f" ({how})"
        elif split.plan.reassociates:
            strategy += " (int32 sums)"
        return Planned(IntegerEmit(split, requantize), strategy, "exact")

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        detail = planned.detail
        return emit_channel_plan(b, site, detail.split,
                                 IntegerTerms(detail.requantize))


def plan_requantize(spec: ConvSpec, target: Target, what: str) -> "str | Decline":
    """Whether a QLinearConv cut into parts summed (``what``: an input-channel split, a kernel
    split) can be built exactly: int32 ConvInteger partial sums, added, then the bias added and
    the sum requantized once; the words for the record, or why not."""
    if not spec.weight_zero_points:
        return Decline(f"{what} of a QLinearConv needs its weight zero point; this one is "
                       "computed in the graph")
    if not spec.constant_scales:
        return Decline(f"{what} of a QLinearConv requantizes its int32 sum, which needs "
                       "constant scales")
    centre = len(spec.weight_zero_points) > 1
    if centre and spec.groups > 1:
        return Decline(f"{what} of a grouped QLinearConv whose weight zero points differ per "
                       "channel would centre each group's window sums: not built")
    missing = missing_ops(target, REQUANTIZE_OPS | ({"Sub"} if centre else set()))
    if missing:
        return Decline(f"{what} of a QLinearConv sums int32 partial sums and requantizes them "
                       f"once: {missing.reason}")
    how = "int32 ConvInteger partial sums"
    if centre:
        how += (f", each less its {len(spec.weight_zero_points)} per-channel weight zero points "
                "times its window's input sum")
    return how + ", bias added, requantized once"


def integer_partial(b: Builder, site: ConvSite, x, w, rows: tuple[int, int], stem: str,
                    attrs: dict, shape=None, out=None):
    """The int32 sum of (x - x_zp) * (w - w_zp) over ``w``'s taps for output channels ``rows``,
    the part of an integer conv that parts of it add up exactly: a ConvInteger with the site's
    zero points (a ConvInteger site: its own op and zero points, the weight's cut to ``rows``;
    a QLinearConv site's per-channel weight zero points that differ: centred,
    ``Builder.conv_integer_centred``)."""
    q = site.quant
    if site.spec.op_type == "ConvInteger":
        inputs = [x, w]
        if "x_zero_point" in q:         # the omitted-input placeholder when only w's is set
            inputs.append(q["x_zero_point"])
        if "w_zero_point" in q and q["w_zero_point"].name:
            inputs.append(b.channel_param(q["w_zero_point"], *rows, f"{stem}.w_zero_point"))
        return b.conv(site, inputs, stem, attrs, out=out, shape=shape)
    if len(site.spec.weight_zero_points) > 1:
        return b.conv_integer_centred(site, x, w, *rows, stem, attrs, shape=shape)
    inputs = [x, w, q["x_zero_point"], b.uniform_param(q["w_zero_point"], f"{stem}.w_zero_point")]
    return b.conv(site, inputs, stem, attrs, shape=shape, op_type="ConvInteger")


@dataclass(frozen=True)
class IntegerTerms:
    """How an integer conv's sub-convs and blocks are built (``emit_channel_plan``'s form)."""

    requantize: bool

    def term(self, b: Builder, site: ConvSite, block, t: int, x, w, stem: str, attrs: dict,
             out=None, shape=None):
        q, rows = site.quant, (block.out_start, block.out_stop)
        if site.spec.op_type == "ConvInteger":
            return integer_partial(b, site, x, w, rows, stem, attrs, shape=shape, out=out)
        if len(block.terms) > 1:            # a partial sum: int32, requantized in ``join``
            return integer_partial(b, site, x, w, rows, stem, attrs, shape=shape)
        inputs = [x, q["x_scale"], q["x_zero_point"], w,
                  b.channel_param(q["w_scale"], *rows, f"{stem}.w_scale"),
                  b.channel_param(q["w_zero_point"], *rows, f"{stem}.w_zero_point"),
                  q["y_scale"], q["y_zero_point"]]
        if site.bias is not None:
            inputs.append(b.bias(site, *rows, stem))
        return b.conv(site, inputs, stem, attrs, out=out, shape=shape)

    def join(self, b: Builder, site: ConvSite, block, terms: list, accumulate: str, stem: str,
             out=None):
        if not (self.requantize and len(terms) > 1):
            return b.sum(terms, accumulate, stem, out=out)
        total = b.sum(terms, accumulate, stem)
        return b.requantize(total, site, block.out_start, block.out_stop,
                            stem.replace("/sum.", "/requant."), out=out)

