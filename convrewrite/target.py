"""Target description: what one accelerator's conv engine accepts.

A target is read from YAML (safe loader only), validated field by field so that every error names
its key path (``conv.max_in_channels: expected a positive integer, got -3``), and may ``extends:`` a
shipped preset or another file. Presets live in ``convrewrite/targets/*.yaml``.
"""

from __future__ import annotations

import codecs
import copy
import math
import os
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import TargetError

GROUP_FORMS = ("regular", "depthwise", "grouped")
SHIFT_FORMS = ("auto", "slice_pad", "depthwise", "fold")
ACCUMULATE_MODES = ("chain", "tree")
INPUT_SPLIT_MODES = ("split", "slice")
DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int32")


# ---------------------------------------------------------------- value checkers
# Each checker returns the cleaned value or raises TargetError naming the key path.

def _fail(path: str, expected: str, got: Any) -> None:
    raise TargetError(f"{path}: expected {expected}, got {got!r}")


def _positive_int(path: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        _fail(path, "a positive integer", v)
    return v


def _non_negative_int(path: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        _fail(path, "a non-negative integer", v)
    return v


def _non_negative_float(path: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        _fail(path, "a finite non-negative number", v)
    return float(v)


def _boolean(path: str, v: Any) -> bool:
    if not isinstance(v, bool):
        _fail(path, "true or false", v)
    return v


def _text(path: str, v: Any) -> str:
    if not isinstance(v, str):
        _fail(path, "a string", v)
    return v


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda path, v: None if v is None else check(path, v)


def _list_of(check: Callable[[str, Any], Any], *, non_empty: bool = True) -> Callable[[str, Any], tuple]:
    def run(path: str, v: Any) -> tuple:
        if not isinstance(v, list) or (non_empty and not v):
            _fail(path, "a non-empty list" if non_empty else "a list", v)
        return tuple(check(f"{path}[{i}]", item) for i, item in enumerate(v))
    return run


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def run(path: str, v: Any) -> str:
        if v not in choices:
            _fail(path, "one of " + ", ".join(choices), v)
        return v
    return run


def _kernel_shape(path: str, v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= 3:
        _fail(path, "a list of 1 to 3 positive integers (a kernel's spatial shape)", v)
    return tuple(_positive_int(f"{path}[{i}]", k) for i, k in enumerate(v))


def _size_range(path: str, v: Any) -> tuple[int, int]:
    if not isinstance(v, list) or len(v) != 2:
        _fail(path, "[min, max] with two positive integers", v)
    lo, hi = (_positive_int(f"{path}[{i}]", x) for i, x in enumerate(v))
    if lo > hi:
        _fail(path, "min <= max", v)
    return lo, hi


def _op_name(path: str, v: Any) -> str:
    if not isinstance(v, str) or not v or not v[0].isalpha():
        _fail(path, "an ONNX operator name", v)
    return v


# ---------------------------------------------------------------- the schema

def _rule(check: Callable[[str, Any], Any], default: Any, doc: str) -> Any:
    """A dataclass field that knows how to validate itself and explain itself."""
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class ConvRules:
    """Limits of the conv engine. ``None`` means "no limit"."""

    max_in_channels: int | None = _rule(_optional(_positive_int), None,
                                        "input channels of one conv")
    max_out_channels: int | None = _rule(_optional(_positive_int), None,
                                         "output channels of one conv")
    channel_align: int = _rule(_positive_int, 1,
                               "preferred multiple for channel chunks when splitting")
    spatial_ranks: tuple[int, ...] = _rule(_list_of(_positive_int), (1, 2, 3),
                                           "conv spatial ranks the engine runs (1-D, 2-D, 3-D)")
    kernel_shapes: tuple[tuple[int, ...], ...] | None = _rule(
        _optional(_list_of(_kernel_shape)), None, "the only kernel spatial shapes allowed")
    max_kernel: int | None = _rule(_optional(_positive_int), None,
                                   "largest kernel extent in any spatial dimension")
    max_dilated_kernel_height: int | None = _rule(
        _optional(_positive_int), None, "largest (k_h - 1) * d_h + 1")
    max_dilated_kernel_area: int | None = _rule(
        _optional(_positive_int), None, "largest product of dilated kernel extents")
    max_stride: int | None = _rule(_optional(_positive_int), None, "largest stride")
    max_dilation: int | None = _rule(_optional(_positive_int), None, "largest dilation")
    max_pad: int | None = _rule(_optional(_non_negative_int), None, "largest padding on any side")
    symmetric_pad: bool = _rule(_boolean, False, "begin and end padding must be equal")
    same_pad_only: bool = _rule(_boolean, False,
                                "padding must be exactly (k - 1) / 2 * d on every side")
    groups: tuple[str, ...] = _rule(_list_of(_one_of(GROUP_FORMS)), GROUP_FORMS,
                                    "grouped forms run natively: regular, depthwise, grouped")
    max_depth_multiplier: int | None = _rule(_optional(_positive_int), None,
                                             "largest depthwise channel multiplier")
    depth_multiplier_needs_single_input: bool = _rule(
        _boolean, False, "a depthwise multiplier > 1 is only allowed with one input channel")
    transposed: bool = _rule(_boolean, True, "ConvTranspose runs natively")
    transposed_strides: tuple[int, ...] | None = _rule(
        _optional(_list_of(_positive_int)), None, "strides allowed for ConvTranspose")
    transposed_valid_shape: bool = _rule(
        _boolean, False, "a ConvTranspose's uncropped output must be input*stride + "
        "max(kernel - stride, 0), as TFLite/Vela's TRANSPOSE_CONV requires: output_padding "
        "only fills a kernel shorter than its stride")
    input_height: tuple[int, int] | None = _rule(
        _optional(_size_range), None, "[min, max] input height (second-last spatial dim)")
    input_width: tuple[int, int] | None = _rule(
        _optional(_size_range), None, "[min, max] input width (last spatial dim)")
    max_dim: int | None = _rule(_optional(_positive_int), None,
                                "largest extent of any input/output/weight dimension")
    max_batch: int | None = _rule(_optional(_positive_int), None, "largest batch")
    max_weight_sum: int | None = _rule(
        _optional(_positive_int), None,
        "largest sum of |int8 weights| of one output channel, quantized per output channel "
        "(scale max|w|/127, as TFLite); Ethos-U: 8323072")
    dtypes: tuple[str, ...] | None = _rule(_optional(_list_of(_one_of(DTYPES))), None,
                                           "input element types the engine runs")


@dataclass(frozen=True)
class VerifyRules:
    """Tolerances; ``None`` falls back to onnxruntime's own per-dtype test tolerances."""

    rtol: float | None = _rule(_optional(_non_negative_float), None, "relative tolerance")
    atol: float | None = _rule(_optional(_non_negative_float), None, "absolute tolerance")


@dataclass(frozen=True)
class RewriteRules:
    """How lowerings are emitted, where more than one form is correct."""

    accumulate: str = _rule(_one_of(ACCUMULATE_MODES), "chain",
                            "partial sums of an input-channel split: chain or balanced tree")
    input_split: str = _rule(_one_of(INPUT_SPLIT_MODES), "split",
                             "cut a conv input into channel chunks with one Split or a Slice each")
    transposed_form: str = _rule(_one_of(("auto", "subpixel", "zero_insertion")), "auto",
                                 "ConvTranspose lowering: sub-pixel phases (no MACs on inserted "
                                 "zeros) or zero insertion (any rank/dilation); auto tries "
                                 "sub-pixel first")
    fuse_chunks: bool = _rule(_boolean, True,
                              "keep split tensors chunked through Relu/Add/... instead of "
                              "Concat then Split again")
    shift_form: str = _rule(_one_of(SHIFT_FORMS), "auto",
                            "a shift (Shift op, one-hot depthwise conv): auto picks the cheapest "
                            "legal of slice_pad (zero FLOPs), depthwise (one-hot) and fold (into "
                            "the next 1x1 conv)")


# What Vela 5.2 accepts as --accelerator-config (vela --help).
VELA_CONFIGS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256",
                "ethos-u65-256", "ethos-u65-512", "ethos-u85-128", "ethos-u85-256",
                "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")


@dataclass(frozen=True)
class VendorRules:
    """The vendor compiler that judges this target (``--vendor-check``), if one is known."""

    compiler: str | None = _rule(_optional(_one_of(("vela",))), None,
                                 "the vendor compiler that judges placement: vela (Arm Ethos-U)")
    accelerator_config: str | None = _rule(_optional(_one_of(VELA_CONFIGS)), None,
                                           "vela --accelerator-config, e.g. ethos-u55-128")
    core: str = _rule(_one_of(("regor", "legacy")), "regor",
                      "the Vela core whose placement is the verdict (the other is a second "
                      "opinion): regor (Vela 5 default) or legacy (--debug-force-legacy-core)")
    options: tuple[str, ...] = _rule(_list_of(_text, non_empty=False), (),
                                     "extra vela command-line options (e.g. --system-config X)")


@dataclass(frozen=True)
class Target:
    name: str = "custom"
    description: str = ""
    sources: tuple[str, ...] = ()
    conv: ConvRules = field(default_factory=ConvRules)
    ops: tuple[str, ...] | None = None
    max_tensor_rank: int | None = None
    max_tensor_dim: int | None = None
    max_tensor_batch: int | None = None
    verify: VerifyRules = field(default_factory=VerifyRules)
    rewrite: RewriteRules = field(default_factory=RewriteRules)
    vendor: VendorRules = field(default_factory=VendorRules)
    # The YAML files this target was read from (its own and every ``extends:``), so the command
    # line can refuse to write onto one of them. Not part of what the target means.
    files: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def allows_op(self, op_type: str) -> bool:
        return self.ops is None or op_type in self.ops


SECTIONS = {"conv": ConvRules, "verify": VerifyRules, "rewrite": RewriteRules,
            "vendor": VendorRules}
TOP_LEVEL = {
    "name": _text,
    "description": _text,
    "extends": _text,
    "sources": _list_of(_text, non_empty=False),
    "ops": _optional(_list_of(_op_name)),
    "max_tensor_rank": _optional(_positive_int),
    "max_tensor_dim": _optional(_positive_int),
    "max_tensor_batch": _optional(_positive_int),
}


def _build_section(cls: type, path: str, raw: Any) -> Any:
    if not isinstance(raw, dict):
        _fail(path, "a mapping", raw)
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise TargetError(f"{path}.{key}: unknown key (known: {', '.join(sorted(known))})")
        values[key] = known[key].metadata["check"](f"{path}.{key}", value)
    return cls(**values)


def target_from_dict(raw: Any) -> Target:
    """Validate an already-merged mapping (no ``extends:`` left) into a Target."""
    if not isinstance(raw, dict):
        _fail("<target>", "a mapping at the top level", type(raw).__name__)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS:
            values[key] = _build_section(SECTIONS[key], key, value if value is not None else {})
        elif key in TOP_LEVEL:
            if key != "extends":
                values[key] = TOP_LEVEL[key](key, value)
        else:
            known = sorted([*SECTIONS, *TOP_LEVEL])
            raise TargetError(f"{key}: unknown key (known: {', '.join(known)})")
    return Target(**values)


# ---------------------------------------------------------------- loading

def preset_names() -> list[str]:
    folder = resources.files("convrewrite") / "targets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader without anchors/aliases: a target never needs them, and an alias bomb
    (``a: &a [*b, *b, ...]``, nested) would expand to billions of nodes in our merge/validation."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            key = f"{index.value}: " if isinstance(index, yaml.ScalarNode) else ""
            raise _AliasFound(f"{key}YAML alias *{event.anchor} (line {event.start_mark.line + 1}) "
                              "is not allowed in a target; write the value out")
        return super().compose_node(parent, index)


class _AliasFound(Exception):
    pass


BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"))


def _decode(data: bytes, origin: str) -> str:
    """UTF-8 text (UTF-8/16/32 with a byte-order mark are decoded too); anything else is one line
    naming the file and what it looks like."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise TargetError(f"{origin}: not valid {encoding.upper()} text "
                                  f"(byte {exc.start})") from None
    if b"\0" in data:
        head = data[:400]
        halves = max(head[0::2].count(0), head[1::2].count(0))
        looks = "looks like UTF-16 without a byte-order mark" if halves > len(head) // 2 * 0.4 \
            else "looks like a binary file: it has NUL bytes"
        raise TargetError(f"{origin}: not UTF-8 text ({looks}); save the target as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TargetError(f"{origin}: not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at "
                          f"offset {exc.start}); save the target as UTF-8") from None


def _read_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.load(text, Loader=_NoAliasLoader)     # noqa: S506 - a SafeLoader subclass
    except _AliasFound as exc:
        raise TargetError(f"{origin}: {exc}") from None
    except RecursionError:
        raise TargetError(f"{origin}: not a target: YAML nested too deeply") from None
    except ValueError as exc:           # e.g. an integer of more than 4300 digits
        raise TargetError(f"{origin}: not a target: {str(exc).splitlines()[0]}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TargetError(f"{origin}: not valid YAML{where}: {problem}") from None


def _load_raw(spec: str, base_dir: Path | None, seen: tuple[str, ...], files: list[str],
              key: str = "") -> dict:
    """Read one YAML document and resolve its ``extends:`` chain into one merged mapping;
    ``files`` collects every file read. ``key`` ("extends: ") prefixes errors about a parent."""
    if "\0" in spec:
        raise TargetError(f"{key}not a preset name or a path: {spec!r}")
    if spec in preset_names() and not (base_dir is not None and (base_dir / spec).is_file()):
        origin = f"preset {spec}"
        identity = origin
        text = (resources.files("convrewrite") / "targets" / f"{spec}.yaml").read_text()
        here = None
    else:
        path = Path(spec) if base_dir is None or os.path.isabs(spec) else base_dir / spec
        if not path.exists():
            if not spec.endswith((".yaml", ".yml")) and os.sep not in spec and not key:
                raise TargetError(f"unknown target {spec!r} (presets: {', '.join(preset_names())};"
                                  " or give a path to a YAML file)")
            raise TargetError(f"{key}target file not found: {path}")
        if not path.is_file():
            raise TargetError(f"{key}target {path} is not a file")
        identity = os.path.realpath(path)
        origin = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TargetError(f"{key}cannot read target {path}: {exc.strerror or exc}") from None
        text, here = _decode(data, origin), path.parent
        files.append(str(path))
    if identity in seen:
        raise TargetError(f"extends: cycle through {' -> '.join([*seen, identity])}")
    raw = _read_yaml(text, origin)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TargetError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    parent = raw.get("extends")
    if parent is None:
        return raw
    if not isinstance(parent, str):
        _fail(f"{origin}: extends", "a preset name or a path", parent)
    merged = _merge(_load_raw(parent, here, (*seen, identity), files, f"{origin}: extends: "), raw)
    merged.pop("extends", None)
    merged.setdefault("name", raw.get("name", "custom"))
    return merged


def _merge(base: dict, over: dict) -> dict:
    """Child keys override the parent's; sections merge key by key; lists are replaced whole."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key in SECTIONS and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        elif key not in ("extends",):
            out[key] = copy.deepcopy(value)
    if "sources" in base and "sources" in over and isinstance(over["sources"], list):
        out["sources"] = list(dict.fromkeys([*base["sources"], *over["sources"]]))
    return out


def load_target(spec: "str | os.PathLike | dict | Target") -> Target:
    """A preset name, a YAML path, a mapping, or a Target (returned as is)."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, dict):
        raw = dict(spec)
        files: list[str] = []
        if "extends" in raw:
            parent = raw["extends"]
            if not isinstance(parent, str):
                _fail("extends", "a preset name or a path", parent)
            raw = _merge(_load_raw(parent, None, (), files, "extends: "), raw)
            raw.pop("extends", None)
        return replace(target_from_dict(raw), files=tuple(files))
    if not isinstance(spec, (str, os.PathLike)):
        raise TargetError(f"target: expected a preset name, a YAML path, a mapping or a Target, "
                          f"got {type(spec).__name__}")
    files = []
    target = target_from_dict(_load_raw(os.fspath(spec), None, (), files))
    return replace(target, files=tuple(files))
