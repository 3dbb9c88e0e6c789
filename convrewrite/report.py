"""The report: what was rewritten and why, what still does not fit, and how well it verified.

One object feeds both the terminal table and the JSON file, so they never disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .conv import dims_text
from .record import Record, Remaining

# unjudged: --vendor-check could not judge the result (onnx2tf wrote no int8 TFLite of it): the
# vendor tool failed on the model, exit 6, with the report (and the original's placement) kept.
STATUS_EXIT = {"ok": 0, "mismatch": 1, "illegal": 3, "fallback": 3, "unjudged": 6}


@dataclass
class Report:
    model: str = ""
    target: str = ""
    records: list[Record] = field(default_factory=list)
    remaining: list[Remaining] = field(default_factory=list)
    convs_checked: int = 0
    end_to_end: dict | None = None
    inputs: dict = field(default_factory=dict)          # name -> shape/dtype actually used
    output: str | None = None
    timings: dict = field(default_factory=dict)
    mode: str = "rewrite"                               # rewrite | check | verify
    notes: list[str] = field(default_factory=list)
    recognised: list[str] = field(default_factory=list)  # patterns named, not rewritten
    tvm: dict | None = None                             # --tvm: build, run, compare (TvmCheck)
    vendor: dict | None = None                          # --vendor-check: vendors.vela.vendor_check

    @property
    def verified(self) -> bool:
        return self.end_to_end is not None or any(r.verify for r in self.records)

    @property
    def mismatches(self) -> list[str]:
        bad = [r.node for r in self.records if r.verify is not None and not r.verify["passed"]]
        if self.end_to_end is not None and not self.end_to_end["passed"]:
            bad.append("<end to end>")
        if self.tvm is not None and not self.tvm["passed"]:
            bad.append("<tvm>")
        return bad

    @property
    def status(self) -> str:
        if self.mismatches:
            return "mismatch"
        if self.remaining:
            return "illegal"
        if self.vendor is not None and self.vendor.get("failed"):
            return "unjudged"
        if self.vendor is not None and not self.vendor["passed"]:
            return "fallback"
        return "ok"

    @property
    def exit_code(self) -> int:
        return STATUS_EXIT[self.status]

    def to_dict(self) -> dict:
        return {
            "status": self.status, "mode": self.mode, "model": self.model, "target": self.target,
            "output": self.output, "convs_checked": self.convs_checked,
            "rewrites": [r.to_dict() for r in self.records],
            "remaining": [r.to_dict() for r in self.remaining],
            "end_to_end": self.end_to_end, "inputs": self.inputs, "timings_s": self.timings,
            "notes": self.notes, "recognised": self.recognised, "tvm": self.tvm,
            "vendor": self.vendor,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=_jsonable)

    def render(self) -> str:
        return render(self)


def _jsonable(v: object) -> object:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def _num(v: int | None) -> str:
    if v is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return str(v)


def _err(stats: dict | None) -> str:
    if not stats:
        return "-"
    if "error" in stats:
        return "FAIL: " + stats["error"]
    verdict = "ok" if stats["passed"] else "FAIL"
    exact = " (bit-exact)" if stats.get("bit_exact") else ""
    return f"{verdict} {stats['max_abs']:.2g}{exact}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return out


def render(report: Report) -> str:
    if report.mode == "verify":
        lines = [f"convrewrite verify: {report.model} vs {report.target}"]
    else:
        lines = [f"convrewrite: {report.model} for target {report.target}"
                 + (f" -> {report.output}" if report.output else "")]
    if report.records:
        rows = []
        for r in report.records:
            rule = ", ".join(_rule_text(v) for v in r.rules) or "none (MACs saved)"
            rows.append([r.node, rule, _clip(r.rewrite),
                         f"{_num(r.macs_before)}/{_num(r.macs_after)}",
                         f"{r.nodes_before}->{r.nodes_after}", _err(r.verify)])
        lines += _table(["node", "rule (value>limit)", "rewrite", "MACs before/after", "nodes",
                         "max abs err"], rows)
    elif report.mode == "rewrite" and not report.remaining:
        lines.append(f"all {report.convs_checked} convs already fit the target; nothing rewritten")
    elif report.mode == "rewrite":
        lines.append("nothing rewritten")
    lines += report.notes
    lines += _recognised_lines(report.recognised)
    for rem in report.remaining:
        lines.append(f"NOT LEGAL {rem.node} ({rem.describe}): "
                     + "; ".join(v.message for v in rem.violations))
        lines += [f"    why: {reason}" for reason in rem.reasons]
    if report.end_to_end is not None:
        e = report.end_to_end
        if "error" in e:
            lines.append(f"end to end: FAIL: {e['error']}")
        else:
            where = f" at {e['worst_output']}{e['worst_index']}" if e.get("worst_output") else ""
            if e.get("onnxruntime_optimization") == "basic":
                lines.append("quantized model: compared under ONNX semantics (onnxruntime basic "
                             "optimisations; its fused int8 kernels are not bit-faithful)")
            lines.append(f"end to end ({e['tolerance']} tolerance atol {e['atol']:.2g} rtol "
                         f"{e['rtol']:.2g}): {'ok' if e['passed'] else 'FAIL'}, max abs "
                         f"{e['max_abs']:.3g}, max rel {e['max_rel']:.3g}{where}, smallest atol "
                         f"that passes {e['min_atol_to_pass']:.3g}{_floor_text(e)}")
            if e.get("engine") == "onnx.reference":
                lines.append("verified on onnx's reference evaluator: onnxruntime has no kernel "
                             "for an op of the model (e.g. a float64 Conv)")
    elif report.mode != "check" and report.records and all(r.verify for r in report.records):
        lines.append("each rewrite verified on its own (no end-to-end check)")
    elif report.mode != "check" and report.records:
        lines.append("not verified (--no-verify)")
    if report.tvm is not None:
        lines.append(report.tvm["summary"])
    if report.vendor is not None:
        lines += _vendor_lines(report.vendor)
    counts = {"ok": "ok", "mismatch": "FAILED: outputs differ", "illegal": "convs remain that "
              "the target cannot run", "fallback": "the vendor compiler keeps convs off the NPU",
              "unjudged": "the vendor compiler could not judge the result"}
    lines.append(f"status: {counts[report.status]} ({len(report.records)} rewritten, "
                 f"{len(report.remaining)} not legal, {report.convs_checked} convs in the result)")
    return "\n".join(lines)


def _floor_text(e: dict) -> str:
    """The original model's own noise floor, next to the error it calibrates."""
    if e.get("noise_floor") is None:
        return ""
    return (f"; the original's own noise floor {e['noise_floor']:.3g} (onnxruntime all vs no "
            f"optimisations; {e['noise_multiple']:g}x allowed)")


REWRITE_COLUMN = 110       # the terminal table's rewrite column; the JSON has the whole text


def _clip(text: str, width: int = REWRITE_COLUMN) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _recognised_lines(found: list[str], shown: int = 3) -> list[str]:
    """Each kind of pattern (the text before the first colon) once, with a few examples."""
    kinds: dict[str, list[str]] = {}
    for text in found:
        kind, _, detail = text.partition(":")
        kinds.setdefault(kind, []).append(detail.strip())
    lines = []
    for kind, details in kinds.items():
        more = f" (+{len(details) - shown} more in the JSON report)" if len(details) > shown else ""
        lines.append(f"recognised {len(details)} {kind}: " + "; ".join(details[:shown]) + more)
    return lines


def _plain(v: object) -> str:
    if isinstance(v, (tuple, list)):
        if v and all(isinstance(x, (tuple, list)) for x in v):
            return "|".join(_plain(x) for x in v)       # a set of shapes: 1x1|3x3
        return dims_text(v)
    return str(v)


def _rule_text(v) -> str:
    """``max_in_channels 2048>1024`` for bounds, ``kernel_shapes 7x7 (allowed 1x1|3x3)`` else."""
    if isinstance(v.limit, int) and not isinstance(v.limit, bool):
        return f"{v.rule} {_plain(v.value)}>{v.limit}"
    return f"{v.rule} {_plain(v.value)} (allowed {_plain(v.limit)})"


def like_for_like_text(core: str, like: dict) -> str:
    """Vela's estimate over the same work (vendors/like_for_like.py), in one line."""
    ratio = "-" if like["ratio"] is None else f"{like['ratio']:.2f}x"
    cpu = like["cpu_ops"]
    beside = "" if not like["cpu_part_original_cycles"] else \
        f" (the NPU ops beside them took {like['cpu_part_original_s'] * 1e3:.3g} ms there)"
    return (f"like for like ({core}): the rewrite {like['rewritten_s'] * 1e3:.3g} ms vs the "
            f"original's {like['original_s'] * 1e3:.3g} ms ({ratio}) over the work the original "
            f"ran wholly on the NPU; where the original ran {cpu} op{'s' if cpu != 1 else ''} "
            f"({_num(like['cpu_macs'])} MACs) on the CPU{beside}, the rewrite spends "
            f"{like['cpu_part_rewritten_s'] * 1e3:.3g} ms on the NPU; {like['cpu_ops_left']} CPU "
            f"ops left ({_num(like['cpu_macs_left'])} MACs)")


def _vendor_lines(v: dict) -> list[str]:
    """The vendor section: placement and Vela's estimate per model and core, then every CPU op
    with Vela's reason (the target's own core first; the other core is a second opinion)."""
    lines = [f"vendor: {v['compiler']} {v['accelerator_config']} (verdict: {v['core']} core)"]
    rows, details = [], []
    for model, per_core in v["models"].items():
        for core, r in per_core.items():
            if r.get("no_tflite"):
                rows.append([model, core, "-", "-", "-", "-", "-", "NO TFLITE"])
                details.append(f"  NO TFLITE {model}/{core}: {r['no_tflite']}")
                continue
            if r.get("crashed"):
                rows.append([model, core, "-", "-", "-", "-", "-", "CRASHED"])
                details.append(f"  CRASHED {model}/{core}: {r['crashed']}")
                continue
            if r["rejected"]:
                rows.append([model, core, "-", "-", "-", "-", "-", "REJECTED"])
                details.append(f"  REJECTED {model}/{core}: {r['rejected']}")
                continue
            total = r["npu"]["macs"] + r["cpu"]["macs"]
            share = f"{100.0 * r['npu']['macs'] / total:.1f}%" if total else "-"
            time = "-" if r["inference_time_s"] is None else f"{r['inference_time_s'] * 1e3:.3g} ms"
            rows.append([model, core, str(r["npu"]["ops"]), str(r["cpu"]["ops"]),
                         str(r["cpu"]["convs"]), _num(r["npu"]["macs"]), share, time])
            for op in r["cpu_ops"]:
                details.append(f"  CPU {model}/{core}: {op['type']} {op['name']!r} "
                               f"{dims_text(op['shape'])}: {op['reason']}")
    lines += ["  " + x for x in _table(["model", "core", "NPU ops", "CPU ops", "CPU convs",
                                        "NPU MACs", "MACs on NPU", "estimate"], rows)]
    lines += details
    for core, like in (v.get("like_for_like") or {}).items():
        if like:
            lines.append("  " + like_for_like_text(core, like))
    if v.get("out_dir"):
        lines.append(f"  Vela's output: {v['out_dir']}")
    lines.append("  vendor check: " + ("every conv on the NPU" if v["passed"] else
                                       f"NOT JUDGED: {v['failed']}" if v.get("failed") else
                                       "FAILED: convs on the CPU, or the model rejected or "
                                       "crashed Vela"))
    return lines
