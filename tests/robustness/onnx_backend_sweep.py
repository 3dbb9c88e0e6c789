"""The models and test cases that ship inside the ``onnx`` package, through the command line, for
every preset: exit codes, modified inputs, and the rewritten models against the outputs shipped
with each case.

    nice -n 19 python -m tests.robustness.onnx_backend_sweep [--preset k210] [--case Conv2d]
                                                             [--json sweep.json]

Cases: every conv-containing model under onnx/backend/test/data (``node/*conv*``,
``pytorch-converted``, ``pytorch-operator``, ``simple``, and the ``light`` model-zoo nets; any
folder this onnx ships). A case with shipped inputs and outputs (``test_data_set_*``) is checked
there: the rewritten model on onnxruntime against ``output_*.pb`` with onnx's backend tolerances
(rtol 1e-3, atol 1e-7), counted as a mismatch only when the original model itself matches them
(a case onnxruntime itself misses is "baseline" and not ours). The ``light`` nets ship an output for
inputs they do not ship; there the command line's own end-to-end check is what counts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from convrewrite import cli
from convrewrite.conv import CONV_OPS
from convrewrite.target import preset_names
from convrewrite.verify import graph_inputs, run
from convrewrite.walk import scopes

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
RTOL, ATOL = 1e-3, 1e-7         # onnx's backend test defaults


@dataclass
class Case:
    name: str                   # e.g. pytorch-converted/test_Conv2d
    model: Path
    data_sets: list[Path] = field(default_factory=list)


def _has_conv(path: Path) -> bool:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:           # noqa: BLE001 - not loadable: the sweep still runs it
        return True
    try:
        graph = gs.import_onnx(model)
    except Exception:           # noqa: BLE001 - gs cannot read it: fall back to the proto
        return any(n.op_type in CONV_OPS for n in model.graph.node)
    return any(n.op in CONV_OPS for s in scopes(graph) for n in s.graph.nodes)


def cases(root: Path = DATA) -> list[Case]:
    """Every conv-containing case shipped under ``root``, sorted by name."""
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name == "light":
            for model in sorted(folder.glob("*.onnx")):
                if _has_conv(model):
                    found.append(Case(f"light/{model.stem}", model))
            continue
        for case in sorted(p for p in folder.iterdir() if p.is_dir()):
            model = case / "model.onnx"
            if folder.name == "node" and "conv" not in case.name.lower():
                continue
            if model.is_file() and _has_conv(model):
                found.append(Case(f"{folder.name}/{case.name}", model,
                                  sorted(case.glob("test_data_set_*"))))
    return found


def _tensors(folder: Path, prefix: str) -> list[np.ndarray]:
    out = []
    for path in sorted(folder.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1])):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(path.read_bytes())
        out.append(numpy_helper.to_array(tensor))
    return out


def _matches_shipped(model: onnx.ModelProto, data_set: Path) -> bool | None:
    """Whether ``model`` on onnxruntime reproduces the shipped outputs (None: cannot run it)."""
    inputs = _tensors(data_set, "input")
    expected = _tensors(data_set, "output")
    names = [i.name for i in graph_inputs(model)]
    if len(inputs) != len(names):
        return None
    try:
        got = run(model, dict(zip(names, inputs)))
    except Exception:           # noqa: BLE001 - counted, not raised
        return None
    outputs = [o.name for o in model.graph.output]
    if len(outputs) != len(expected):
        return None
    return all(np.allclose(got[n], e, rtol=RTOL, atol=ATOL, equal_nan=True)
               for n, e in zip(outputs, expected))


@dataclass
class Outcome:
    case: str
    preset: str
    code: int
    modified_input: bool = False
    shipped: str = "n/a"        # ok | mismatch | baseline | n/a
    stderr: str = ""


def run_case(case: Case, preset: str) -> Outcome:
    """The command line on a copy of the case's model for ``preset``; the copy's bytes are
    compared afterwards, and a written output is checked against the shipped outputs."""
    with tempfile.TemporaryDirectory(prefix="sweep.") as tmp:
        model_path = Path(tmp) / "model.onnx"
        shutil.copyfile(case.model, model_path)
        before = model_path.read_bytes()
        output = Path(tmp) / "out.onnx"
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = cli.main([str(model_path), "--target", preset, "-o", str(output), "-q"])
        outcome = Outcome(case.name, preset, code, model_path.read_bytes() != before,
                          stderr=err.getvalue().strip().splitlines()[-1:][0]
                          if err.getvalue().strip() else "")
        if output.exists() and case.data_sets:
            rewritten = onnx.load(str(output))
            original = onnx.load(str(case.model))
            verdicts = []
            for data_set in case.data_sets:
                if _matches_shipped(original, data_set) is not True:
                    verdicts.append("baseline")
                else:
                    verdicts.append("ok" if _matches_shipped(rewritten, data_set) else "mismatch")
            outcome.shipped = "mismatch" if "mismatch" in verdicts else (
                "ok" if "ok" in verdicts else "baseline")
    return outcome


def sweep(selected: list[Case], presets: list[str], progress=None) -> list[Outcome]:
    outcomes = []
    for preset in presets:
        for case in selected:
            outcomes.append(run_case(case, preset))
            if progress:
                progress(outcomes[-1])
    return outcomes


def summary(outcomes: list[Outcome]) -> dict:
    codes = Counter(o.code for o in outcomes)
    return {
        "runs": len(outcomes),
        "exit": {str(c): codes.get(c, 0) for c in (0, 1, 2, 3, 4)},
        "modified_inputs": sum(o.modified_input for o in outcomes),
        "shipped_outputs": dict(Counter(o.shipped for o in outcomes)),
        "by_preset": {p: dict(Counter(str(o.code) for o in outcomes if o.preset == p))
                      for p in dict.fromkeys(o.preset for o in outcomes)},
        "exit_4": [f"{o.preset} {o.case}: {o.stderr}" for o in outcomes if o.code == 4],
        "mismatches": [f"{o.preset} {o.case}" for o in outcomes if o.shipped == "mismatch"],
        "modified": [f"{o.preset} {o.case}" for o in outcomes if o.modified_input],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", action="append", help="only these presets (default: all)")
    p.add_argument("--case", action="append", help="only cases whose name contains this")
    p.add_argument("--json", help="write the outcomes and the summary here")
    args = p.parse_args(argv)
    selected = [c for c in cases() if not args.case or any(s in c.name for s in args.case)]
    presets = args.preset or preset_names()
    print(f"{len(selected)} conv cases x {len(presets)} presets from {DATA}", flush=True)
    outcomes = sweep(selected, presets, progress=lambda o: print(
        f"{o.preset:18s} {o.case:55s} exit {o.code} shipped {o.shipped}"
        + (" INPUT MODIFIED" if o.modified_input else "")
        + (f"  {o.stderr[:100]}" if o.code in (1, 2, 4) else ""), flush=True))
    result = summary(outcomes)
    print(json.dumps({k: result[k] for k in ("runs", "exit", "modified_inputs",
                                             "shipped_outputs")}))
    for key in ("exit_4", "mismatches", "modified"):
        for line in result[key]:
            print(f"{key}: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": result, "outcomes": [
            o.__dict__ for o in outcomes]}, indent=1))
    return 1 if result["exit"]["4"] or result["modified_inputs"] or result["mismatches"] else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
