"""Run the command line on every exported model x every preset and print a markdown table.

Measures the tool as a new user meets it: `convrewrite M --target P -o OUT --report R.json`
on the files scripts/real_exports.py wrote (run that first, with a python that has torch).
Runs with the project's venv:

    nice -n 10 .venv/bin/python scripts/real_export_table.py EXPORTS_DIR WORK_DIR [--timeout 300]
        [--only NAME ...] [--presets P ...] [--target-file T.yaml ...] > table.md

`--target-file` adds a column per target YAML of your own (named by its file's stem), e.g.
tests/real/no_dilation_rank4.yaml.

Each cell is the exit code (0 ok, 1 mismatch, 2 bad input, 3 convs remain illegal, 4 internal
error); for a non-zero exit the first NOT LEGAL conv (op, rule) or the error line. Every run
also checks the input model is byte-identical afterwards and that nothing was written beside it
(a failure there is a row note: INPUT CHANGED). Results are kept in WORK_DIR/results.json, so a
rerun only runs what is missing (delete it to start over).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _inputs_state(model: Path) -> dict:
    """What must not change: the model, its external data, and the folder's listing."""
    files = [model] + [p for p in (model.with_name(model.name + ".data"),) if p.exists()]
    return {"digests": {p.name: _digest(p) for p in files},
            "listing": sorted(os.listdir(model.parent))}


def _error_line(text: str) -> str:
    """The line a user would read as the reason: an error, a failed check, else the last one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if "error" in low or "fail" in low or "traceback" in low:
            return ln[:300]
    return lines[-1][:300] if lines else ""


def _remaining(report: Path) -> list[dict]:
    """The report's NOT LEGAL nodes, each with every pass's reason (joined)."""
    if not report.exists():
        return []
    return [{"node": r["node"], "op": r["op"], "conv": r["conv"],
             "rules": [v["rule"] for v in r["violations"]],
             "message": "; ".join(v["message"] for v in r["violations"]),
             "why": " | ".join(r["reasons"])}
            for r in json.loads(report.read_text()).get("remaining", [])]


def _family(rem: dict) -> tuple:
    """Nodes left for the same cause: op, rules, and the reasons with shapes and names blurred."""
    why = re.sub(r"\[[^\]]*\]", "[..]", rem["why"])
    why = re.sub(r"(input|output) \S+ has", r"\1 .. has", why)
    return rem["op"], "/".join(rem["rules"]), re.sub(r"\d+", "N", why)


def run_one(model: Path, preset: str, work: Path, timeout: float, target: str | None = None) -> dict:
    """``preset`` names the column; ``target`` (default: the preset) is what --target gets."""
    out_dir = work / f"{model.stem}.{preset}"
    out_dir.mkdir(parents=True, exist_ok=True)
    out, report = out_dir / "out.onnx", out_dir / "report.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "convrewrite.cli", str(model), "--target", target or preset,
           "-o", str(out), "--report", str(report)]
    before = _inputs_state(model)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        code, text = r.returncode, r.stdout + "\n" + r.stderr
    except subprocess.TimeoutExpired as exc:
        code = "timeout"
        text = f"timed out after {timeout:.0f} s\n" + (exc.stderr or b"").decode(errors="replace")
    result = {"model": model.name, "preset": preset, "exit": code,
              "seconds": round(time.time() - t0, 1), "input_unchanged":
              _inputs_state(model) == before, "remaining": [], "error": None}
    result["remaining"] = _remaining(report)
    if code != 0:
        not_legal = [ln for ln in text.splitlines() if ln.startswith("NOT LEGAL")]
        result["error"] = not_legal[0][:300] if code == 3 and not_legal else _error_line(text)
    (out_dir / "log.txt").write_text(text)
    out.unlink(missing_ok=True)          # the rewritten models are not kept (disk)
    return result


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    code = r["exit"]
    note = "" if r["input_unchanged"] else " INPUT CHANGED"
    if code == 0:
        return "0" + note
    if code == 3 and r["remaining"]:
        first = r["remaining"][0]
        more = f" (+{len(r['remaining']) - 1})" if len(r["remaining"]) > 1 else ""
        return f"3: {first['op']} {'/'.join(first['rules']) or '?'}{more}{note}"
    return f"{code}: {(r['error'] or '').replace('|', '/')[:120]}{note}"


def markdown(results: list[dict], models: list[str], presets: list[str], header: list[str]) -> str:
    by = {(r["model"], r["preset"]): r for r in results}
    lines = header + ["", "| model | " + " | ".join(presets) + " |",
                      "|---|" + "---|" * len(presets)]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(_cell(by.get((m, p))) for p in presets) + " |")
    totals = Counter(str(r["exit"]) for r in results)
    lines += ["", "Totals per exit code: " + ", ".join(
        f"exit {k}: {v}" for k, v in sorted(totals.items())) + f" (of {len(results)} runs)"]
    changed = [f"{r['model']} {r['preset']}" for r in results if not r["input_unchanged"]]
    lines.append("Input byte-identical after every run: "
                 + ("yes" if not changed else "NO: " + ", ".join(changed)))
    families: dict[tuple, list] = defaultdict(list)
    for r in results:
        if r["exit"] == 3:
            for rem in r["remaining"]:
                families[_family(rem)].append((r, rem))
    if families:
        lines += ["", "## Exit 3 families (op, rules, reasons): runs, nodes, an example", ""]
        for (op, rules, _), hits in sorted(families.items(), key=lambda kv: -len(kv[1])):
            runs = sorted({f"{r['model']}@{r['preset']}" for r, _ in hits})
            r, rem = hits[0]
            lines.append(f"- **{op} {rules}**: {len(runs)} runs, {len(hits)} nodes; e.g. "
                         f"{r['model']} on {r['preset']}: `{rem['node']}` ({rem['conv']}): "
                         f"{rem['message']}; why: {rem['why'][:400]}")
            lines.append(f"  - runs: {', '.join(runs)}")
    others = [r for r in results if r["exit"] not in (0, 3)]
    if others:
        lines += ["", "## Other non-zero exits", ""]
        lines += [f"- {r['model']} on {r['preset']}: exit {r['exit']}: {r['error']}"
                  for r in others]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exports", type=Path, help="the folder scripts/real_exports.py wrote")
    ap.add_argument("work", type=Path, help="where outputs, reports, logs and results.json go")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per run (default 300)")
    ap.add_argument("--only", nargs="*", help="only these model files (e.g. resnet18.ts.onnx)")
    ap.add_argument("--presets", nargs="*", help="only these presets (default: every preset)")
    ap.add_argument("--target-file", nargs="*", type=Path, default=[],
                    help="target YAMLs of your own, one column each (named by the file's stem)")
    args = ap.parse_args(argv)
    from convrewrite.target import preset_names

    presets = args.presets or list(preset_names())
    files = {p.stem: str(p.resolve()) for p in args.target_file}
    presets += [name for name in files if name not in presets]
    models = sorted(p for p in args.exports.glob("*.onnx") if not args.only or p.name in args.only)
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "results.json"
    results = json.loads(store.read_text()) if store.exists() else []
    done = {(r["model"], r["preset"]) for r in results}
    for model in models:
        for preset in presets:
            if (model.name, preset) in done:
                continue
            r = run_one(model, preset, args.work, args.timeout, files.get(preset))
            results.append(r)
            store.write_text(json.dumps(results, indent=1))
            print(f"{model.name:45s} {preset:16s} {_cell(r)[:100]} ({r['seconds']} s)",
                  file=sys.stderr, flush=True)
    import onnx
    import onnxruntime

    manifest = args.exports / "manifest.json"
    failed = []
    torch_version = "?"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        torch_version = m.get("torch", "?")
        failed = [f"- {e['name']}: {e['error']}" for e in m["exports"] if e["error"]]
    root = Path(__file__).resolve().parent.parent
    code = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h", "--", "convrewrite"],
                          capture_output=True, text=True).stdout.strip() or "?"
    header = [f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; convrewrite at {code} (last "
              f"commit touching convrewrite/); torch {torch_version}, "
              f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}; timeout "
              f"{args.timeout:.0f} s per run",
              "Command: `" + " ".join(["python", "scripts/real_export_table.py"]
                                      + [a for a in (argv or sys.argv[1:])]) + "`"]
    if failed:
        header += ["", "Exports that failed (no row):", *failed]
    for r in results:                   # reasons re-read from the kept reports
        report = args.work / f"{Path(r['model']).stem}.{r['preset']}" / "report.json"
        if report.exists():
            r["remaining"] = _remaining(report)
    names = [p.name for p in models]
    wanted = [r for r in results if r["model"] in names and r["preset"] in presets]
    print(markdown(wanted, names, presets, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
