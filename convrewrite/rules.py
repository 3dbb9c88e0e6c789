"""The one rule table: every rule a target can state, what it means and its default (the target
schema's own field), the predicate that finds a conv breaking it, and which lowerings fix it.

Legality (``legality.check``), ``--list-rules`` and the README's rule list all read this table;
a lowering names the rules it fixes from it (``fixes=rules_named(...)``: a rule it does not know
is an error at import), and ``LOWERING_ORDER`` says in which order the conv fixpoint tries the
lowerings. Each predicate is a small pure function named after the target key it enforces; it
returns a Violation whose message is the user-facing explanation with the numbers filled in
(Vela's style). Rules whose inputs are dynamic (unknown shapes) pass: we only report what we can
prove.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from math import prod
from typing import Callable

from .conv import ConvSpec, dims_text, effective_pads
from .target import SECTIONS, ConvRules


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


RuleCheck = Callable[[ConvSpec, ConvRules], "Violation | None"]
CHECKS: dict[str, RuleCheck] = {}       # rule name -> predicate, in the order violations are listed


def rule(fn: RuleCheck) -> RuleCheck:
    CHECKS[fn.__name__] = fn
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
                             f"node has stride {dims_text(spec.strides)}")
    return None


def valid_output_padding(spec: ConvSpec) -> tuple[int, ...]:
    """The output_padding that makes a ConvTranspose's uncropped output input*stride +
    max(kernel - stride, 0) (TFLite's VALID TRANSPOSE_CONV, all Vela runs): the uncropped ONNX
    output is stride*(input - 1) + kernel + output_padding, so it is max(stride - kernel, 0)."""
    return tuple(max(s - k, 0) for s, k in zip(spec.strides, spec.dilated_kernel))


@rule
def transposed_valid_shape(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if not (spec.transposed and r.transposed_valid_shape) or \
            spec.auto_pad not in ("NOTSET", "", "VALID"):
        return None
    have = tuple(spec.output_padding or (0,) * spec.rank)
    want = valid_output_padding(spec)
    if have != want:
        return Violation("transposed_valid_shape", have, want,
                         f"ConvTranspose output_padding must be {list(want)} for its kernel "
                         f"{dims_text(spec.kernel_shape)} and stride {dims_text(spec.strides)} "
                         f"(TRANSPOSE_CONV outputs input*stride + max(kernel - stride, 0) "
                         f"before cropping); node has {list(have)}")
    return None


def _upper_bound(name: str, what: str,
                 measure: Callable[[ConvSpec], tuple[object, "int | None"]]) -> RuleCheck:
    """Register the rule "<what> must be at most <target.conv.name>"; ``measure`` gives what to
    show and the number to compare (None: unknown, so no violation)."""
    def check(spec: ConvSpec, r: ConvRules) -> Violation | None:
        limit = getattr(r, name)
        if limit is None:               # nothing measured where no limit is set (weight sums)
            return None
        shown, number = measure(spec)
        if number is not None and number > limit:
            text = dims_text(shown) if isinstance(shown, tuple) else shown
            return Violation(name, shown, limit,
                             f"{what} must be at most {limit}; node has {text}")
        return None
    check.__name__ = name
    CHECKS[name] = check
    return check


_upper_bound("max_in_channels", "input channels", lambda s: (s.in_channels, s.in_channels))
_upper_bound("max_out_channels", "output channels", lambda s: (s.out_channels, s.out_channels))


@rule
def kernel_shapes(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.kernel_shapes is not None and spec.kernel_shape not in r.kernel_shapes:
        allowed = ", ".join(dims_text(k) for k in r.kernel_shapes)
        return Violation("kernel_shapes", spec.kernel_shape, r.kernel_shapes,
                         f"kernel must be one of {allowed}; node has {dims_text(spec.kernel_shape)}")
    return None


_upper_bound("max_kernel", "kernel extents",
             lambda s: (s.kernel_shape, max(s.kernel_shape)))
_upper_bound("max_dilated_kernel_height", "dilated kernel height",
             lambda s: (s.dilated_kernel[-2], s.dilated_kernel[-2]) if s.rank >= 2 else (0, None))
_upper_bound("max_dilated_kernel_area", "dilated kernel area",
             lambda s: (s.dilated_kernel, prod(s.dilated_kernel)))
_upper_bound("max_stride", "stride", lambda s: (s.strides, max(s.strides)))
_upper_bound("max_dilation", "dilation", lambda s: (s.dilations, max(s.dilations)))


def _pads(spec: ConvSpec) -> tuple[object, "int | None"]:
    pads = effective_pads(spec)
    return (pads, None) if pads is None else (pads, max(pads, default=0))


_upper_bound("max_pad", "padding", _pads)


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


_upper_bound("max_depth_multiplier", "depthwise multiplier",
             lambda s: (s.depth_multiplier, s.depth_multiplier))


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


CHECKS["input_height"] = _size_rule("input_height", "height", 2)
CHECKS["input_width"] = _size_rule("input_width", "width", 1)


def _largest_dim(spec: ConvSpec) -> tuple[object, "int | None"]:
    dims = [d for shape in (spec.input_shape or (), spec.output_shape or (), spec.weight_shape)
            for d in shape if d is not None]
    return (max(dims), max(dims)) if dims else (None, None)


_upper_bound("max_dim", "every tensor dimension", _largest_dim)
_upper_bound("max_batch", "batch", lambda s: (s.input_shape[0], s.input_shape[0])
             if s.input_shape else (None, None))

_upper_bound("max_weight_sum", "the sum of |int8 weights| of every output channel",
             lambda s: (s.weight_sum, s.weight_sum))


@rule
def dtypes(spec: ConvSpec, r: ConvRules) -> Violation | None:
    if r.dtypes is not None and spec.dtype not in r.dtypes:
        return Violation("dtypes", spec.dtype, r.dtypes,
                         f"input type must be one of {', '.join(r.dtypes)}; node has {spec.dtype}")
    return None


@dataclass(frozen=True)
class Rule:
    name: str               # the target key, e.g. "max_in_channels"
    key: str                # its path in the YAML, e.g. "conv.max_in_channels"
    meaning: str
    default: object
    check: "RuleCheck | None" = None    # None: checked by the pattern passes, not per conv


_FIELDS = {f.name: f for f in fields(ConvRules)}
RULES: dict[str, Rule] = {
    "ops": Rule("ops", "ops", "ONNX ops a lowering may emit (null: any); our domain's ops run on "
                "no engine and are always lowered", None),
    "max_tensor_rank": Rule("max_tensor_rank", "max_tensor_rank",
                            "highest tensor rank the runtime handles, e.g. 4 (null: any); "
                            "channel shuffles through 5-D tensors are removed when it is lower",
                            None),
    "max_tensor_dim": Rule("max_tensor_dim", "max_tensor_dim",
                           "largest extent of any tensor any op reads or writes, not only a "
                           "conv's (null: none), e.g. Vela 3's 65535 on every NPU op", None),
    "max_tensor_batch": Rule("max_tensor_batch", "max_tensor_batch",
                             "largest batch of the 4-D (or higher) feature maps any op reads, "
                             "ops that only cut or view a tensor excepted (null: none), e.g. "
                             "Vela 3's batch 1 on every NPU op", None),
    **{name: Rule(name, f"conv.{name}", _FIELDS[name].metadata["doc"], _FIELDS[name].default, fn)
       for name, fn in CHECKS.items()},
}

# The order the conv fixpoint tries lowerings in, where one conv breaks several rules: ranks the
# engine lacks become 2-D first (a 3-D conv may fold its depth into the batch), batches too big
# are cut next (once, before other lowerings multiply the convs to cut), then group forms (the
# dense convs they become may need a channel split), channels next (the pieces stay smaller),
# taps that only read padding are dropped (exact, and it shrinks what follows), a ConvTranspose
# becomes plain convs next, then stride (so later pieces run at stride 1), dilation (a dense
# kernel may then need splitting; the per-tap form where it is the cheaper), kernel, padding (it
# may need stride 1 to crop), and tiling last (on the convs that remain).
LOWERING_ORDER = ("rank", "batch", "groups", "depth_multiplier", "channel_split", "integer_split",
                  "dead_taps", "transposed_shape", "transposed", "stride", "dilation", "dilation_taps",
                  "kernel_split", "padding", "tiling")

# The pattern passes, run once before the conv fixpoint (each again while it rewrites), in this
# order: convs over --sparse-input tensors become SparseConvs first and SparseConvs standard ONNX
# next, our ops become standard ONNX, shuffles lose their 5-D tensors (then stacks summed over
# the new axis, then any other data movement through high-rank tensors: patch unfolds, pixel
# shuffles, arithmetic between such views), and shifts take their cheapest form; the convs these
# emit then get legalised.
PATTERN_ORDER = ("dense_to_sparse", "sparse_conv", "channelwise", "shuffle", "stack_reduction",
                 "rank_reduction", "broadcast_views", "shift")
# The tidying passes, after local verification: they undo what the lowerings cost at run time
# and move the boundary between a rewrite and what came before it.
# Graph passes over what the conv fixpoint left, in the same rewrite step (their records are
# checked locally like the lowerings'): the pointwise ops around the lowered convs.
LOWERED_ORDER = ("transpose_views", "view_pieces", "piecewise")
TIDY_ORDER = ("view_sinking", "chunk_fusion", "sum_fusion", "pad_fusion")

FIXED_BY: dict[str, list[str]] = {name: [] for name in RULES}   # filled as passes register


def add_fixer(name: str, fixes: frozenset[str], order: tuple[str, ...], where: str) -> None:
    """A lowering or pass registering: ``name`` must be in ``order`` (``where`` names it in the
    error), and it becomes a fixer of each rule in ``fixes``."""
    if name not in order:
        raise KeyError(f"{name!r} is not in {where}")
    for rule in fixes:
        FIXED_BY[rule].append(name)


def rules_named(*names: str) -> frozenset[str]:
    """The rule names, checked against the table (a typo fails at import, not silently)."""
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise KeyError(f"not in the rule table: {', '.join(unknown)}")
    return frozenset(names)


def fixers(rule: str) -> list[str]:
    """The lowerings and passes that fix ``rule``, conv lowerings in ``LOWERING_ORDER`` first."""
    rank = {name: i for i, name in enumerate(LOWERING_ORDER)}
    return sorted(set(FIXED_BY[rule]), key=lambda n: (rank.get(n, len(rank)), n))


def conv_checks() -> list[Rule]:
    return [r for r in RULES.values() if r.check is not None]


def describe_rules() -> list[tuple[str, str, object]]:
    """(key path, meaning, default) for every rule and option of a target, each rule with the
    lowerings that fix it: what ``--list-rules`` prints and the README lists."""
    rows = []
    for rule in RULES.values():
        names = fixers(rule.name)
        meaning = rule.meaning + (f" [fixed by: {', '.join(names)}]" if names else "")
        rows.append((rule.key, meaning, rule.default))
    rows += [(f"{section}.{f.name}", f.metadata["doc"], f.default)
             for section, cls in SECTIONS.items() for f in fields(cls)
             if not (section == "conv" and f.name in RULES)]
    return rows
