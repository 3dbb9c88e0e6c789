"""Arm's Vela as the judge: what of a model runs on the Ethos-U NPU, what falls back to the CPU
and why, or whether Vela rejects it; and Vela's own performance estimate.

    from convrewrite.vendors.vela import judge
    verdict = judge("model.onnx", "ethos-u55")        # onnx2tf -> int8 TFLite -> Vela
    verdict.result("regor").cpu_ops                    # [OpPlacement(type, name, reason, ...)]

Vela 5.2 compiles with its C++ core ("regor") by default; ``--debug-force-legacy-core`` runs the
deprecated Python core of Vela <= 3.x, kept as a second opinion. The placement is read from the
files, not the log: ops that run on the CPU keep their TFLite op in Vela's output flatbuffer while
the NPU parts become ``ethos-u`` custom ops, so each op of the input TFLite is matched (by its
output tensor) to what Vela left of it. The log gives the reason per CPU op and the rejection.
Compiles are byte-deterministic, so the estimate is a fair before/after comparison.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from math import prod
from pathlib import Path

import onnx

from ..errors import BadInputError
from ..graph import load_model
from ..target import Target, load_target
from ..verify import make_inputs
from . import tflite as tflite_conversion
from .env import VELA, VendorFailed
from .like_for_like import like_for_like

CORES = ("regor", "legacy")
CONV_TYPES = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D", "CONV_3D_TRANSPOSE")
DEFAULT_TIMEOUT_S = 900
READER = Path(__file__).with_name("tflite_ops.py")


def cores_for(config: str, wanted: tuple[str, ...] = CORES) -> tuple[str, ...]:
    """The cores that compile for ``config``: Vela 5.2's legacy core refuses Ethos-U85 ("The
    legacy core only supports Ethos-U55 and Ethos-U65 systems")."""
    return tuple(c for c in wanted if not (c == "legacy" and config.startswith("ethos-u85")))


@dataclass
class OpPlacement:
    index: int
    type: str                 # the TFLite builtin op, e.g. CONV_2D
    name: str                 # its first output tensor
    shape: list[int]          # that output's shape
    macs: int
    npu: bool
    reason: str | None = None  # why Vela put it on the CPU (its own words)
    cycles: float | None = None  # Vela's estimate for it (its per-layer figures; 0 on the CPU)

    @property
    def conv(self) -> bool:
        return self.type in CONV_TYPES


@dataclass
class VelaResult:
    """One Vela compile of one TFLite file."""

    config: str                       # --accelerator-config
    core: str                         # regor | legacy
    ops: list[OpPlacement] = field(default_factory=list)
    rejected: str | None = None       # Vela refused the model: its message
    crashed: str | None = None        # Vela died on a signal: "vela crashed (signal 11)", or
    #                                   ran past the timeout: "vela did not finish in 900 s"
    no_tflite: str | None = None      # Vela never ran: onnx2tf wrote no int8 TFLite
    #                                   ("no int8 TFLite: <onnx2tf's reason>")
    inference_time_s: float | None = None   # Vela's estimate (NPU work only)
    cycles: int | None = None
    output_dir: str | None = None
    unattributed_cycles: float = 0.0  # per-layer cycles Vela gave to no op of the input TFLite

    @property
    def cpu_ops(self) -> list[OpPlacement]:
        return [op for op in self.ops if not op.npu]

    @property
    def failure(self) -> str | None:
        """Why there is no placement: no int8 TFLite to compile, or Vela rejected the model or
        crashed on it."""
        return self.no_tflite or self.crashed or self.rejected

    @property
    def all_on_npu(self) -> bool:
        return self.failure is None and not self.cpu_ops

    @property
    def convs_on_npu(self) -> bool:
        return self.failure is None and not any(op.conv for op in self.cpu_ops)

    def counts(self) -> dict:
        def part(ops):
            return {"ops": len(ops), "convs": sum(op.conv for op in ops),
                    "macs": sum(op.macs for op in ops)}
        npu = [op for op in self.ops if op.npu and self.failure is None]
        cpu = [op for op in self.ops if not op.npu or self.failure is not None]
        return {"npu": part(npu), "cpu": part(cpu)}

    def to_dict(self) -> dict:
        return {"config": self.config, "core": self.core, "rejected": self.rejected,
                "crashed": self.crashed, "no_tflite": self.no_tflite,
                "inference_time_s": self.inference_time_s, "cycles": self.cycles,
                **self.counts(), "cpu_ops": [asdict(op) for op in self.cpu_ops],
                "output_dir": self.output_dir}

    def summary(self) -> str:
        if self.no_tflite:
            return f"{self.core}: {self.no_tflite}"
        if self.crashed:
            return f"{self.core}: {self.crashed}"
        if self.rejected:
            return f"{self.core}: REJECTED: {self.rejected}"
        c = self.counts()
        total_macs = c["npu"]["macs"] + c["cpu"]["macs"]
        share = 100.0 * c["npu"]["macs"] / total_macs if total_macs else 100.0
        time = "" if self.inference_time_s is None else \
            f", estimate {self.inference_time_s * 1e3:.3g} ms"
        return (f"{self.core}: {c['npu']['ops']} ops on the NPU, {c['cpu']['ops']} on the CPU "
                f"({c['cpu']['convs']} convs); {share:.1f}% of MACs on the NPU{time}")


# ---------------------------------------------------------------- reading TFLite files

def read_ops(path: Path) -> dict:
    """The op list of a TFLite file (tflite_ops.py run by the Python that has Vela)."""
    run = subprocess.run([str(VELA.interpreter()), str(READER), str(path)], capture_output=True,
                         text=True)
    if run.returncode != 0:
        raise VendorFailed(f"could not read {path}: {_last_line(run.stderr)}")
    return json.loads(run.stdout)


def op_macs(op: dict) -> int:
    """Multiply-accumulates of one TFLite op (convs, fully connected, batch matmul; else 0)."""
    kind, ins, outs = op["type"], op["inputs"], op["outputs"]
    if not outs or outs[0] is None or len(ins) < 2:
        return 0
    out = outs[0]["shape"]
    if kind == "CONV_2D":                         # weight [O, KH, KW, I]
        return prod(out) * prod(ins[1]["shape"][1:])
    if kind == "DEPTHWISE_CONV_2D":               # weight [1, KH, KW, C*M]
        return prod(out) * prod(ins[1]["shape"][1:3])
    if kind == "TRANSPOSE_CONV" and len(ins) >= 3:    # (shape, weight [O, KH, KW, I], input)
        return prod(ins[2]["shape"]) * prod(ins[1]["shape"][:3])
    if kind == "CONV_3D":                         # weight [KD, KH, KW, I, O]
        return prod(out) * prod(ins[1]["shape"][:4])
    if kind == "CONV_3D_TRANSPOSE" and len(ins) >= 3:
        return prod(ins[2]["shape"]) * prod(ins[1]["shape"][:3]) * ins[1]["shape"][3]
    if kind == "FULLY_CONNECTED":                 # weight [O, I]
        return prod(out) * ins[1]["shape"][-1]
    if kind == "BATCH_MATMUL":
        return prod(out) * ins[0]["shape"][-1]
    return 0


# ---------------------------------------------------------------- running Vela

# Regor:  "Warning (supported operators) operator: CONV_2D, ofm: 'NAME'" then "Reason: ...".
# Legacy: "Warning: CONV_2D 'NAME' is not supported on the NPU. Placing on CPU instead", then
#         " - <the constraint>" and "   <what the op has>" lines.
HEADERS = (re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'$"),
           re.compile(r"^Warning: (\S+) '(.*)' is not supported on the NPU"),
           re.compile(r"^Warning: .*?\b([A-Z][A-Z0-9_]+) '(.*?)'.*Placing on CPU"))


def parse_reasons(log: str) -> dict[str, str]:
    """Vela's reason per CPU op, keyed by the op's output tensor name (both cores' formats)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in log.splitlines():
        header = next((m for m in (h.match(line) for h in HEADERS) if m), None)
        if header:
            current = blocks.setdefault(header.group(2), [])
        elif current is not None and (not line.strip() or line.startswith(("CPU operators",
                                                                           "NPU operators"))):
            current = None
        elif current is not None:
            current.append(line)
    return {name: _reason(lines) for name, lines in blocks.items()}


def _reason(lines: list[str]) -> str:
    said = [x[len("Reason:"):].strip() for x in lines if x.startswith("Reason:")]
    if said:                                                     # regor
        return "; ".join(said)
    constraint = [x[3:].strip() for x in lines if x.startswith(" - ")]
    detail = [x.strip() for x in lines if re.match(r"^   [^ -]", x)]
    text = "; ".join(constraint[:1] + detail) or "; ".join(x.strip() for x in lines[:2])
    return text or "no reason given"


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


def _rejection(log: str) -> str:
    """What Vela said when it refused the model (the exception it ended with)."""
    for line in reversed(log.strip().splitlines()):
        line = line.strip()
        if re.match(r"^\w+(Error|Exception):", line):
            return line.split(":", 1)[1].strip()
    return _last_line(log)


def layer_cycles(folder: Path) -> list[tuple[str, float]] | None:
    """Vela's per-layer estimate (``--verbose-performance`` writes ``*_per-layer.csv``): (layer
    name, cycles) in Vela's order; None when Vela wrote no such file (no NPU work). The legacy
    core writes one table per NPU subgraph, each under its own header row."""
    files = sorted(folder.glob("*_per-layer.csv"))
    if not files:
        return None
    with open(files[0], newline="") as f:
        return [(row["Name"], float(row["Op Cycles"])) for row in csv.DictReader(f)
                if row["Op Cycles"] != "Op Cycles"]


def attribute_cycles(ops: list[OpPlacement], layers: list[tuple[str, float]] | None) -> float:
    """Give each op Vela's cycles for the layers named after its output tensor: the layers of that
    name (regor splits a 5-D ADD into one per depth slice), ``NAME_suffix`` layers the legacy
    core derives from it (``.../Relu_avgpool``), and the unnamed ``#N`` layers just before them
    (regor's steps of a decomposed TRANSPOSE, the last of which carries the op's name). CPU ops
    get 0. Returns the cycles of layers that name no op."""
    for op in ops:
        op.cycles = None if layers is None and op.npu else 0.0
    if layers is None:
        return 0.0
    by_name = {op.name: op for op in ops if op.name}
    unattributed = pending = 0.0
    for name, value in layers:
        if name.startswith("#"):
            pending += value
            continue
        owner = by_name.get(name) or max(
            (op for n, op in by_name.items() if name.startswith(n + "_")),
            key=lambda op: len(op.name), default=None)
        if owner is None:
            unattributed += value + pending
        else:
            owner.cycles += value + pending
        pending = 0.0
    return unattributed + pending


def _performance(folder: Path) -> tuple[float | None, int | None]:
    for summary in sorted(folder.glob("*_summary_*.csv")):
        with open(summary, newline="") as f:
            row = next(csv.DictReader(f), None)
        if row:
            return float(row["inference_time"]), int(float(row["cycles_total"]))
    return None, None


def compile_tflite(tflite: Path, config: str, core: str = "regor", out_dir: Path | None = None,
                   options: tuple[str, ...] = (), ops: dict | None = None,
                   timeout: float = DEFAULT_TIMEOUT_S) -> VelaResult:
    """Compile one int8 TFLite file with Vela and read back the placement of each of its ops."""
    if core not in CORES:
        raise ValueError(f"core must be one of {CORES}")
    exe = VELA.require()
    ops = ops if ops is not None else read_ops(tflite)
    folder = Path(out_dir or tempfile.mkdtemp(prefix="vela-"))
    folder.mkdir(parents=True, exist_ok=True)
    args = [str(exe), "--accelerator-config", config, "--show-cpu-operations",
            "--verbose-performance", "--output-dir", str(folder), *options, str(tflite)]
    if core == "legacy":
        args.insert(1, "--debug-force-legacy-core")
    try:
        run = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                             env=dict(os.environ, PYTHONWARNINGS="ignore"))
    except subprocess.TimeoutExpired:
        # a result like a crash (the legacy core ran past 900 s on DeepLabV3-MobileNetV3 at
        # 256x256): the other core and the other model go on
        placed = [_placement(i, op) for i, op in enumerate(ops["ops"])]
        return VelaResult(config, core, placed, output_dir=str(folder),
                          crashed=f"vela did not finish in {timeout:.0f} s")
    log = run.stdout + run.stderr
    (folder / f"vela_{core}.log").write_text(log)
    result = VelaResult(config, core, output_dir=str(folder))
    compiled = folder / f"{tflite.stem}_vela.tflite"
    placed = [_placement(i, op) for i, op in enumerate(ops["ops"])]
    if run.returncode < 0:          # killed by a signal (regor SIGSEGVs on some models)
        result.crashed = f"vela crashed (signal {-run.returncode})"
        result.ops = placed
        return result
    if run.returncode != 0 or not compiled.is_file():
        if "Traceback" not in log and "Error" not in log:
            raise VendorFailed(f"vela ({core}) failed (exit {run.returncode}): {_last_line(log)}")
        result.rejected = _rejection(log)
        result.ops = placed
        return result
    return read_compiled(ops, read_ops(compiled), log, folder, config, core)


def read_compiled(ops: dict, compiled: dict, log: str, folder: Path, config: str,
                  core: str) -> VelaResult:
    """What one Vela compile made of a TFLite (``ops``: its op list; ``compiled``: the op list of
    Vela's output file, where the ops left on the CPU keep their TFLite op), with Vela's reason
    per CPU op from ``log``, and its estimate and per-layer cycles from its output ``folder``."""
    reasons = parse_reasons(log)
    left = {o["outputs"][0]["name"] for o in compiled["ops"]
            if not o["type"].startswith("CUSTOM:ethos-u") and o["outputs"] and o["outputs"][0]}
    placed = [_placement(i, op) for i, op in enumerate(ops["ops"])]
    for op in placed:
        if op.name in left:
            op.npu = False
            op.reason = reasons.get(op.name, "no reason given")
    result = VelaResult(config, core, placed, output_dir=str(folder))
    result.inference_time_s, result.cycles = _performance(folder)
    result.unattributed_cycles = attribute_cycles(placed, layer_cycles(folder))
    return result


def _placement(index: int, op: dict) -> OpPlacement:
    out = op["outputs"][0] if op["outputs"] and op["outputs"][0] else {"name": "", "shape": []}
    return OpPlacement(index, op["type"], out["name"], out["shape"], op_macs(op), npu=True)


# ---------------------------------------------------------------- ONNX in, verdict out

@dataclass
class Verdict:
    """What Vela makes of one ONNX model: its int8 TFLite and one result per core."""

    tflite: str
    ops: dict
    results: dict[str, VelaResult]

    def result(self, core: str = "regor") -> VelaResult:
        return self.results[core]

    def to_dict(self) -> dict:
        return {"tflite": self.tflite, **{c: r.to_dict() for c, r in self.results.items()}}


def vela_config(target: Target) -> tuple[str, tuple[str, ...]]:
    """The target's Vela accelerator config and extra options, or why it has none."""
    vendor = target.vendor
    if vendor.compiler != "vela" or not vendor.accelerator_config:
        raise BadInputError(f"target {target.name} names no vendor compiler (vendor.compiler: "
                            "vela and vendor.accelerator_config in its YAML; the ethos-u presets "
                            "have them)")
    return vendor.accelerator_config, tuple(vendor.options)


def calibration_samples(model: onnx.ModelProto, feeds: dict | None, seed: int,
                        input_shapes: dict | None,
                        count: int = tflite_conversion.CALIBRATION_SAMPLES) -> list[dict]:
    """The given feeds, or ``count`` seeded draws (uniform [-1, 1], as verification uses)."""
    if feeds is not None:
        return [feeds]
    return [make_inputs(model, seed=seed + k, shapes=input_shapes) for k in range(count)]


def judge(model, target="ethos-u55", *, feeds: dict | None = None, seed: int = 0,
          input_shapes: dict | None = None, cores: tuple[str, ...] = CORES,
          out_dir: "str | os.PathLike | None" = None,
          timeout: float = tflite_conversion.DEFAULT_TIMEOUT_S) -> Verdict:
    """Convert ``model`` (ONNX path or proto) to int8 TFLite and compile it with Vela for the
    target's accelerator on each of ``cores``. ``feeds`` calibrate the quantization (else seeded
    inputs); ``out_dir`` keeps every file (TFLite, Vela's output and logs), else a temp folder is
    used and removed."""
    target = load_target(target)
    config, options = vela_config(target)
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    samples = calibration_samples(proto, feeds, seed, input_shapes)
    with tempfile.TemporaryDirectory(prefix="convrewrite-vela-") as scratch:
        work = Path(out_dir) if out_dir is not None else Path(scratch)
        tflite = tflite_conversion.convert(proto, samples, work / "onnx2tf", timeout)
        ops = read_ops(tflite)
        results = {core: compile_tflite(tflite, config, core, work / f"vela_{core}", options,
                                        ops) for core in cores_for(config, cores)}
        if out_dir is None:
            for r in results.values():
                r.output_dir = None
        return Verdict(str(tflite) if out_dir is not None else "", ops, results)


def vendor_check(original: onnx.ModelProto, rewritten: onnx.ModelProto | None, target, *,
                 feeds: dict | None = None, seed: int = 0, input_shapes: dict | None = None,
                 out_dir: "str | os.PathLike | None" = None,
                 timeout: float = tflite_conversion.DEFAULT_TIMEOUT_S,
                 vela_timeout: float = DEFAULT_TIMEOUT_S,
                 cores: tuple[str, ...] | None = None) -> dict:
    """The report's ``vendor`` section: the original and the rewritten model (None or the same
    object: only the original) through onnx2tf and Vela on the target's core and the other core
    as a second opinion (``timeout``: onnx2tf's per model; ``vela_timeout``: each compile's, past
    which that cell says so and the rest goes on; ``cores``: which to compile, default the
    target's and the other). A model onnx2tf writes no int8 TFLite for is that model's result on
    every core ("no int8 TFLite: <onnx2tf's reason>"), and the other model goes on. ``passed`` is
    False when the target's core puts a conv of the result on the CPU, rejects it or crashes, or
    the result has no int8 TFLite; ``failed`` then says why the verdict could not be made (no
    TFLite), else is None. With both models judged, ``like_for_like`` has per core Vela's cycles
    of the rewrite against the original's over the work the original ran wholly on the NPU, and
    the parts where the original ran ops on the CPU (like_for_like.py), or None where a side has
    no placement."""
    target = load_target(target)
    config, options = vela_config(target)
    models = {"original": original}
    if rewritten is not None and rewritten is not original:
        models["rewritten"] = rewritten
    with tempfile.TemporaryDirectory(prefix="convrewrite-vela-") as scratch:
        root = Path(out_dir) if out_dir is not None else Path(scratch)
        jobs = {name: tflite_conversion.Job(m, calibration_samples(m, feeds, seed, input_shapes),
                                            root / name / "onnx2tf")
                for name, m in models.items()}
        made = tflite_conversion.convert_many(list(jobs.values()), timeout)
        section = {"compiler": f"vela {_vela_version()}", "accelerator_config": config,
                   "core": target.vendor.core, "models": {}, "out_dir": None}
        wanted = cores_for(config, cores or (target.vendor.core, *[c for c in CORES
                                                                 if c != target.vendor.core]))
        compiled: dict[str, tuple[dict, dict[str, VelaResult]]] = {}
        for (name, job), tflite in zip(jobs.items(), made):
            if isinstance(tflite, VendorFailed):
                section["models"][name] = {core: VelaResult(config, core,
                                                            no_tflite=str(tflite)).to_dict()
                                           for core in wanted}
                continue
            ops = read_ops(tflite)
            results = {core: compile_tflite(tflite, config, core, root / name / f"vela_{core}",
                                            options, ops, vela_timeout) for core in wanted}
            compiled[name] = (ops, results)
            section["models"][name] = {core: r.to_dict() for core, r in results.items()}
        if len(compiled) == 2:
            section["like_for_like"] = {core: _like_for_like(compiled, core) for core in wanted}
        if out_dir is not None:
            section["out_dir"] = str(root)
        else:
            for per_core in section["models"].values():
                for result in per_core.values():
                    result["output_dir"] = None
    final = section["models"]["rewritten" if "rewritten" in models else "original"]
    verdict = final[target.vendor.core if target.vendor.core in final else next(iter(final))]
    section["failed"] = verdict["no_tflite"]
    section["passed"] = (verdict["rejected"] is None and verdict["crashed"] is None
                         and verdict["no_tflite"] is None and verdict["cpu"]["convs"] == 0)
    return section


def _like_for_like(compiled: dict, core: str) -> dict | None:
    """Vela's estimate of the rewrite against the original's over the same work (see
    like_for_like.py), or None where a side has no placement or per-layer figures."""
    (a_ops, a), (b_ops, b) = compiled["original"], compiled["rewritten"]
    found = like_for_like(a[core], a_ops, b[core], b_ops)
    return found.to_dict() if found else None


def _vela_version() -> str:
    run = subprocess.run([str(VELA.require()), "--version"], capture_output=True, text=True)
    return run.stdout.strip() or "?"
