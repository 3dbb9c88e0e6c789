"""Legality: pure functions of (ConvSpec, Target) that say what a target rejects, and why.

Each rule is a small function named after the target key it enforces; it returns a Violation whose
message is the user-facing explanation with the numbers filled in (Vela's style). Rules whose inputs
are dynamic (unknown shapes) pass: we only report what we can prove.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable, Iterable

from .conv import ConvSpec
from .target import ConvRules, Target


@dataclass(frozen=True)
class Violation:
    rule: str          # the target key, e.g. "max_in_channels"
    value: object      # what the conv has
    limit: object      # what the target allows
    message: str

    def to_dict(self) -> dict:
        return {"rule": self.rule, "value": _plain(self.value), "limit": _plain(self.limit),
                "message": self.message}


def _plain(v: object) -> object:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _x(values: Iterable[int]) -> str:
    return "x".join(str(v) for v in values)


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


RuleCheck = Callable[[ConvSpec, ConvRules], "Violation | None"]
RULES: dict[str, RuleCheck] = {}


def rule(fn: RuleCheck) -> RuleCheck:
    RULES[fn.__name__] = fn
    return fn


@rule
def spatial_ranks(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if spec.rank not in r.spatial_ranks:
        allowed = ", ".join(f"{k}-D" for k in r.spatial_ranks)
        return Violation("spatial_ranks", spec.rank, r.spatial_ranks,
                         f"only {allowed} convs run on this target; node is {spec.rank}-D")
    return None


@rule
def transposed(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if spec.transposed and not r.transposed:
        return Violation("transposed", True, False, "ConvTranspose does not run on this target")
    return None


@rule
def transposed_strides(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if spec.transposed and r.transposed_strides is not None:
        bad = [s for s in spec.strides if s not in r.transposed_strides]
        if bad:
            return Violation("transposed_strides", spec.strides, r.transposed_strides,
                             f"ConvTranspose strides must be in {list(r.transposed_strides)}; "
                             f"node has stride {_x(spec.strides)}")
    return None


@rule
def max_in_channels(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.max_in_channels is not None and spec.in_channels > r.max_in_channels:
        return Violation("max_in_channels", spec.in_channels, r.max_in_channels,
                         f"input channels must be at most {r.max_in_channels}; "
                         f"node has {spec.in_channels}")
    return None


@rule
def max_out_channels(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.max_out_channels is not None and spec.out_channels > r.max_out_channels:
        return Violation("max_out_channels", spec.out_channels, r.max_out_channels,
                         f"output channels must be at most {r.max_out_channels}; "
                         f"node has {spec.out_channels}")
    return None


@rule
def kernel_shapes(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.kernel_shapes is not None and spec.kernel_shape not in r.kernel_shapes:
        allowed = ", ".join(_x(k) for k in r.kernel_shapes)
        return Violation("kernel_shapes", spec.kernel_shape, r.kernel_shapes,
                         f"kernel must be one of {allowed}; node has {_x(spec.kernel_shape)}")
    return None


@rule
def max_kernel(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.max_kernel is not None and max(spec.kernel_shape) > r.max_kernel:
        return Violation("max_kernel", spec.kernel_shape, r.max_kernel,
                         f"kernel extents must be at most {r.max_kernel}; "
                         f"node has {_x(spec.kernel_shape)}")
    return None


@rule
def max_dilated_kernel_height(spec: ConvSpec, r: ConvRules) -> Violation | None:
    limit = r.max_dilated_kernel_height
    if limit is not None and spec.rank >= 2 and spec.dilated_kernel[-2] > limit:
        return Violation("max_dilated_kernel_height", spec.dilated_kernel[-2], limit,
                         f"dilated kernel height must be at most {limit}; "
                         f"node has {spec.dilated_kernel[-2]}")
    return None


@rule
def max_dilated_kernel_area(spec: ConvSpec, r: ConvRules) -> Violation | None:
    limit, area = r.max_dilated_kernel_area, prod(spec.dilated_kernel)
    if limit is not None and area > limit:
        return Violation("max_dilated_kernel_area", area, limit,
                         f"dilated kernel area must be at most {limit}; node has "
                         f"{_x(spec.dilated_kernel)} = {area}")
    return None


@rule
def max_stride(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.max_stride is not None and max(spec.strides) > r.max_stride:
        return Violation("max_stride", spec.strides, r.max_stride,
                         f"stride must be at most {r.max_stride}; node has stride {_x(spec.strides)}")
    return None


@rule
def max_dilation(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.max_dilation is not None and max(spec.dilations) > r.max_dilation:
        return Violation("max_dilation", spec.dilations, r.max_dilation,
                         f"dilation must be at most {r.max_dilation}; "
                         f"node has dilation {_x(spec.dilations)}")
    return None


@rule
def max_pad(spec: ConvSpec, r: ConvRules) -> Violation | None:
    pads = effective_pads(spec)
    if r.max_pad is not None and pads is not None and max(pads) > r.max_pad:
        return Violation("max_pad", pads, r.max_pad,
                         f"padding must be at most {r.max_pad}; node pads {list(pads)}")
    return None


@rule
def symmetric_pad(spec: ConvSpec, r: ConvRules) -> Violation | None:
    pads = effective_pads(spec)
    if r.symmetric_pad and pads is not None and pads[:spec.rank] != pads[spec.rank:]:
        return Violation("symmetric_pad", pads, "begin == end",
                         f"padding must be symmetric; node pads {list(pads)}")
    return None


@rule
def same_pad_only(spec: ConvSpec, r: ConvRules) -> Violation | None:
    pads = effective_pads(spec)
    want = tuple((k - 1) // 2 for k in spec.dilated_kernel) * 2
    odd = all(k % 2 == 1 for k in spec.dilated_kernel)
    if r.same_pad_only and pads is not None and (pads != want or not odd):
        return Violation("same_pad_only", pads, want,
                         f"padding must be (k-1)/2 on every side ({list(want)}); "
                         f"node pads {list(pads)}")
    return None


@rule
def groups(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if spec.group_form not in r.groups:
        return Violation("groups", spec.group_form, r.groups,
                         f"{spec.group_form} convs do not run on this target (it runs "
                         f"{', '.join(r.groups)}); node has groups={spec.groups}")
    return None


@rule
def max_depth_multiplier(spec: ConvSpec, r: ConvRules) -> Violation | None:
    limit = r.max_depth_multiplier
    if limit is not None and spec.depth_multiplier > limit:
        return Violation("max_depth_multiplier", spec.depth_multiplier, limit,
                         f"depthwise multiplier must be at most {limit}; "
                         f"node has {spec.depth_multiplier}")
    return None


@rule
def depth_multiplier_needs_single_input(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if (r.depth_multiplier_needs_single_input and spec.depth_multiplier > 1
            and spec.in_channels != 1):
        return Violation("depth_multiplier_needs_single_input", spec.in_channels, 1,
                         f"a depthwise multiplier > 1 needs 1 input channel; node has multiplier "
                         f"{spec.depth_multiplier} on {spec.in_channels} channels")
    return None


def _spatial_extent(spec: ConvSpec, from_end: int) -> int | None:
    if spec.input_shape is None or spec.rank < from_end:
        return None
    return spec.input_shape[-from_end]


def _size_rule(name: str, label: str, from_end: int) -> RuleCheck:
    def check(spec: ConvSpec, r: ConvRules) -> Violation | None:
        bounds, size = getattr(r, name), _spatial_extent(spec, from_end)
        if bounds is not None and size is not None and not bounds[0] <= size <= bounds[1]:
            return Violation(name, size, bounds,
                             f"input {label} must be in [{bounds[0]}, {bounds[1]}]; node has {size}")
        return None
    check.__name__ = name
    return check


RULES["input_height"] = _size_rule("input_height", "height", 2)
RULES["input_width"] = _size_rule("input_width", "width", 1)


@rule
def max_dim(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.max_dim is None:
        return None
    dims = [d for shape in (spec.input_shape or (), spec.output_shape or (), spec.weight_shape)
            for d in shape if d is not None]
    if dims and max(dims) > r.max_dim:
        return Violation("max_dim", max(dims), r.max_dim,
                         f"every tensor dimension must be at most {r.max_dim}; node has {max(dims)}")
    return None


@rule
def max_batch(spec: ConvSpec, r: ConvRules) -> Violation | None:
    batch = spec.input_shape[0] if spec.input_shape else None
    if r.max_batch is not None and batch is not None and batch > r.max_batch:
        return Violation("max_batch", batch, r.max_batch,
                         f"batch must be at most {r.max_batch}; node has {batch}")
    return None


@rule
def dtypes(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.dtypes is not None and spec.dtype not in r.dtypes:
        return Violation("dtypes", spec.dtype, r.dtypes,
                         f"input type must be one of {', '.join(r.dtypes)}; node has {spec.dtype}")
    return None


def check(spec: ConvSpec, target: Target) -> list[Violation]:
    """Every rule the target states that this conv breaks, in a stable order."""
    found = (fn(spec, target.conv) for fn in RULES.values())
    return [v for v in found if v is not None]
