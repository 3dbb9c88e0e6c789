"""Run every one-conv probe through onnx2tf and Vela 5.2 for each Ethos-U preset and write the
README's "what the NPU takes" table (between its probe-table markers).

    python scripts/probe_vela.py [--cache DIR] [--no-readme]

Needs the vendor venvs (python -m convrewrite.vendors.install). Conversions are cached by content
in --cache (default: a folder under the vendor dir), so a second run only re-renders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convrewrite.vendors.env import vendor_dir
from convrewrite.vendors.probes import PROBES
from convrewrite.vendors.survey import (legality, preset_run, probe_outcomes, rewritten_probes,
                                        vela_presets)

START, END = "<!-- probe table: start (scripts/probe_vela.py) -->", "<!-- probe table: end -->"


def _ms(t):
    return "?" if t is None else f"{t * 1e3:.3g} ms"


def cell(probe, target, original, rewritten) -> str:
    got = original[probe.name][preset_run(target)]
    broken = legality(probe, target)
    vela = {"npu": "NPU", "cpu": "CPU", "rejected": "rejected", "crashed": "Vela crashed",
            "failed": "no TFLite"}[got.verdict]
    if not broken:
        return f"legal: {vela}" + ("" if got.verdict == "npu" else " (MISMATCH)")
    after = rewritten.get((target.name, probe.name), {}).get("outcome")
    if after is None:
        ours = "ours: not rewritten"
    elif after.verdict == "cpu":
        kinds = sorted({part.split(":")[0].strip() for part in after.reason.split("; ")
                        if part.split(":")[0].strip().isupper()})
        ours = f"ours: CPU ({', '.join(kinds)})"
    else:
        ours = "ours: " + {"npu": "NPU", "rejected": "rejected", "failed": "no TFLite (onnx2tf "
                           "fails)"}[after.verdict]
    if got.verdict == "npu" and after is not None:
        return f"`{broken[0]}`: {vela} {_ms(got.time_s)}; {ours} {_ms(after.time_s)}"
    return f"`{broken[0]}`: {vela}; {ours}"


def render(presets, original, rewritten) -> str:
    heads = [f"{t.name} ({t.vendor.accelerator_config}, {t.vendor.core})" for t in presets]
    lines = ["| probe | " + " | ".join(heads) + " |", "|---" * (len(presets) + 1) + "|"]
    for p in PROBES:
        lines.append(f"| {p.what} | " + " | ".join(cell(p, t, original, rewritten)
                                                    for t in presets) + " |")
    reasons = {}
    for p in PROBES:
        for (config, core), got in original[p.name].items():
            if got.reason:
                reasons.setdefault(got.reason, []).append(f"{p.name} ({config}, {core})")
    lines += ["", "Vela's own words for each fallback or rejection:", ""]
    for reason, where in reasons.items():
        text = reason if len(reason) <= 220 else reason[:217] + "..."
        lines.append(f"- {text} — {', '.join(where[:4])}{' ...' if len(where) > 4 else ''}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=vendor_dir() / "probe-cache")
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    args = parser.parse_args()
    presets = vela_presets()
    original = probe_outcomes(args.cache, presets)
    rewritten = rewritten_probes(args.cache, presets)
    table = render(presets, original, rewritten)
    print(table)
    if not args.no_readme:
        readme = Path(__file__).resolve().parents[1] / "README.md"
        text = readme.read_text()
        if START not in text or END not in text:
            print("README has no probe-table markers", file=sys.stderr)
            return 1
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
