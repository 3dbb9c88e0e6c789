"""Many models through the judge at once: the probe table and the rewritten probes.

Conversions are content-addressed: a model's TFLite and Vela's output live under
``cache/<sha256 of the ONNX bytes>/``, so the probe script and the vendor tests share one run and
a second run converts nothing. All conversions that are missing run in one onnx2tf process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from ..api import rewrite
from ..build.onnx_read import spec_of
from ..gs_graph import to_graph
from ..legality import check
from ..pipeline import conv_nodes
from ..target import Target, load_target, preset_names
from .probes import PROBES, Probe
from .tflite import Job, conversion_tag, convert_many
from .vela import CORES, VelaResult, calibration_samples, compile_tflite, cores_for, read_ops


@dataclass
class Outcome:
    """One compile of one model: ``npu`` (every op), ``cpu`` (some op falls back), ``rejected``
    (Vela refused the model), ``crashed`` (Vela died on a signal) or ``failed`` (it never reached
    Vela: conversion failed)."""

    verdict: str
    reason: str = ""
    time_s: float | None = None
    cpu_ops: int = 0
    ops: int = 0

    @classmethod
    def of(cls, result: VelaResult) -> "Outcome":
        if result.crashed:
            return cls("crashed", result.crashed, None, len(result.ops), len(result.ops))
        if result.rejected:
            return cls("rejected", result.rejected, None, len(result.ops), len(result.ops))
        cpu = result.cpu_ops
        reason = "; ".join(dict.fromkeys(f"{op.type}: {op.reason}" for op in cpu))
        return cls("cpu" if cpu else "npu", reason, result.inference_time_s, len(cpu),
                   len(result.ops))


def digest(model: onnx.ModelProto) -> str:
    """The cache key: the model's bytes, and how the judge converts it (``conversion_tag``)."""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()[:20] + \
        conversion_tag(model)


def judge_many(models: dict[str, onnx.ModelProto], runs: list[tuple[str, str]],
               cache: Path) -> dict[str, dict[tuple[str, str], Outcome]]:
    """Each model compiled for each (accelerator config, core) in ``runs``; cached."""
    cache.mkdir(parents=True, exist_ok=True)
    folders = {name: cache / digest(m) for name, m in models.items()}
    missing, seen = [], set()
    for name, m in models.items():          # identical models (two presets' same rewrite): once
        folder = folders[name]
        if folder in seen or (folder / "model.tflite").is_file() or \
                (folder / "failed.txt").is_file():
            continue
        seen.add(folder)
        missing.append((name, m))
    jobs = [Job(m, calibration_samples(m, None, 0, None), folders[name]) for name, m in missing]
    for (name, _), made in zip(missing, convert_many(jobs) if jobs else []):
        if not isinstance(made, Path):
            (folders[name] / "failed.txt").write_text(str(made))
    out: dict[str, dict[tuple[str, str], Outcome]] = {}
    for name, folder in folders.items():
        out[name] = {}
        if (folder / "failed.txt").is_file():
            reason = (folder / "failed.txt").read_text()
            out[name] = {run: Outcome("failed", reason) for run in runs}
            continue
        ops = None
        for config, core in runs:
            if core not in cores_for(config):
                continue
            record = folder / f"{config}.{core}.json"
            if record.is_file():
                out[name][(config, core)] = Outcome(**json.loads(record.read_text()))
                continue
            ops = ops or read_ops(folder / "model.tflite")
            result = compile_tflite(folder / "model.tflite", config, core,
                                    folder / f"vela_{config}_{core}", ops=ops)
            outcome = Outcome.of(result)
            record.write_text(json.dumps(asdict(outcome)))
            out[name][(config, core)] = outcome
    return out


def preset_run(target: Target) -> tuple[str, str]:
    return target.vendor.accelerator_config, target.vendor.core


def legality(probe: Probe, target: Target) -> list[str]:
    """The rules ``target`` says the probe breaks (empty: legal)."""
    model = probe.model()
    rules = []
    if probe.op == "Shuffle5D" and (target.max_tensor_rank or 5) < 5:
        rules.append("max_tensor_rank")
    for node in conv_nodes(to_graph(model)):
        rules += [v.rule for v in check(spec_of(node), target)]
    return rules


def vela_presets() -> list[Target]:
    targets = [load_target(n) for n in preset_names()]
    return [t for t in targets if t.vendor.compiler == "vela"]


def all_runs(presets: list[Target]) -> list[tuple[str, str]]:
    """Every (config, core) the presets are judged on, and the other core as a second opinion."""
    runs = []
    for t in presets:
        for core in cores_for(t.vendor.accelerator_config, CORES):
            run = (t.vendor.accelerator_config, core)
            if run not in runs:
                runs.append(run)
    return runs


def probe_outcomes(cache: Path, presets: list[Target] | None = None,
                   probes: tuple[Probe, ...] = PROBES,
                   runs: list[tuple[str, str]] | None = None):
    """Each probe compiled on ``runs`` (default: every preset's, and the other core)."""
    presets = presets or vela_presets()
    return judge_many({p.name: p.model() for p in probes}, runs or all_runs(presets), cache)


def rewritten_probes(cache: Path, presets: list[Target] | None = None,
                     probes: tuple[Probe, ...] = PROBES,
                     runs: list[tuple[str, str]] | None = None) -> dict[tuple[str, str], dict]:
    """For each preset and each probe it calls illegal: our rewrite, verified on onnxruntime,
    then judged on the preset's own (config, core), compiled on ``runs`` (default: every
    preset's, and the other core). Keyed (preset, probe)."""
    presets = presets or vela_presets()
    models, notes = {}, {}
    for t in presets:
        for p in probes:
            broken = legality(p, t)
            if not broken:
                continue
            key = f"{t.name}|{p.name}"
            model, report = rewrite(p.model(), t)
            notes[key] = {"rules": broken, "status": report.status,
                          "rewrites": [r.rewrite for r in report.records],
                          "remaining": [r.to_dict() for r in report.remaining]}
            if report.status == "ok" and report.records:
                models[key] = model
    judged = judge_many(models, runs or all_runs(presets), cache)
    out = {}
    for key, note in notes.items():
        preset, probe = key.split("|", 1)
        t = next(t for t in presets if t.name == preset)
        outcome = judged.get(key, {}).get(preset_run(t))
        out[(preset, probe)] = {**note, "outcome": outcome}
    return out
