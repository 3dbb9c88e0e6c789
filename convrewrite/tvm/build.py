"""Import an ONNX model into Relax, build it for LLVM or CUDA, run it, check it on onnxruntime.

The build is TVM's own per-target Relax pipeline (library dispatch, legalization, fusion,
lowering, memory planning) with our stages put in: before legalization the convs are lowered to
GEMM form (``lowering.py``: our TIR kernel with packed weights on the CPU, im2col + matmul for
dlight on CUDA), and on the CPU our schedules are applied after fusion (``cpu_schedule.py``).
``schedules=False`` builds with TVM's defaults alone (the slow reference path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..errors import BadInputError
from ..verify import Tolerance, compare_outputs, graph_inputs, run
from . import require_tvm
from .conv_to_gemm import LowerConvsToGemm
from .cpu_schedule import ScheduleCPU
from .machines import gpu_present, nvcc_compiler, parse_kind, tvm_target
from .remote import run_remote
from .run import run_executable
from .shift_fusion import FuseShift, shift_pairs
from .tuning import TuneCPU, TuningLog, tuning_dir


def import_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]):
    """The model as a Relax IRModule, shapes made static from ``feeds``; weights are constants."""
    require_tvm()
    from tvm.relax.frontend.onnx import from_onnx
    shapes = {i.name: list(feeds[i.name].shape) for i in graph_inputs(model)}
    dtypes = {i.name: str(feeds[i.name].dtype) for i in graph_inputs(model)}
    try:
        return from_onnx(model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as exc:        # noqa: BLE001 - the frontend raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"TVM's ONNX frontend cannot import the model: {first}") from None


def relax_pipeline(target, kind: str, schedules: bool = True, tuning=None):
    """TVM's default pipeline for ``kind``, with our lowering and schedules when asked, and
    MetaSchedule tuning of the rest when ``tuning`` (a ``tuning.TuningLog``) is given."""
    tvm = require_tvm()
    if kind == "llvm":
        from tvm.relax.backend.cpu_generic import pipeline as base
    else:
        from tvm.relax.backend.cuda import pipeline as base

    stages = list(base.library_dispatch_passes(target))
    if schedules and kind == "llvm":
        stages.append(FuseShift())          # before the 1x1 convs become plain GEMM calls
    if schedules:
        stages.append(LowerConvsToGemm(kind))
    stages += base.legalize_passes(target)
    if tuning is not None:
        stages.append(TuneCPU(target, tuning.trials, Path(tuning.database), tuning))
    if schedules and kind == "llvm":
        stages.append(ScheduleCPU(target))
    stages += base.dataflow_lower_passes(target) + base.finalize_passes(target)

    @tvm.transform.module_pass(opt_level=0, name="convrewrite_pipeline")
    def _pipeline(mod, _ctx):
        with target:
            return tvm.transform.Sequential(stages)(mod)

    return _pipeline


def build(mod, kind: str, schedules: bool = True, target=None, tuning=None):
    """Compile a Relax module for ``kind`` (llvm or cuda); CUDA is compiled by nvcc.
    ``tuning`` (a ``tuning.TuningLog``, llvm only) tunes with MetaSchedule and records what
    it did."""
    require_tvm()
    from tvm import relax
    target = target or tvm_target(kind)
    pipeline = relax_pipeline(target, kind, schedules, tuning)
    if kind == "cuda":
        with nvcc_compiler():
            return relax.build(mod, target=target, relax_pipeline=pipeline)
    return relax.build(mod, target=target, relax_pipeline=pipeline)


def cuda_source(executable) -> str | None:
    """The CUDA C source TVM generated for the executable's kernels, if any."""
    module = _find_module(executable.mod, "cuda")
    return None if module is None else str(module.inspect_source("cuda"))


def _find_module(module, kind: str):
    if module.kind == kind:
        return module
    for child in module.imports:
        found = _find_module(child, kind)
        if found is not None:
            return found
    return None


def export(executable, kind: str, out_dir: "str | Path", stem: str = "model") -> list[str]:
    """Write the compiled library (and, for CUDA, the generated .cu source) into ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--tvm-out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    library = out / f"{stem}.{kind}.so"
    executable.export_library(str(library))
    written.append(str(library))
    if kind == "cuda":
        source = cuda_source(executable)
        if source:
            path = out / f"{stem}.cu"
            path.write_text(source)
            written.append(str(path))
    return written


@dataclass
class TvmCheck:
    """What ``--tvm`` did: built, run (or why not), compared, exported."""
    kind: str
    target: str
    schedules: bool
    ran: bool = False
    skipped: str | None = None
    comparison: dict | None = None
    exported: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    remote: dict | None = None          # where it ran over RPC, and its timing there
    fused_shifts: int = 0               # shift + 1x1 pairs run as one fused kernel
    tuning: dict | None = None          # what MetaSchedule tuned / reused (tuning.TuningLog)

    @property
    def passed(self) -> bool:
        return self.comparison is None or bool(self.comparison["passed"])

    def to_dict(self) -> dict:
        return {"kind": self.kind, "target": self.target, "schedules": self.schedules,
                "ran": self.ran, "skipped": self.skipped, "passed": self.passed,
                "comparison": self.comparison, "exported": self.exported,
                "timings_s": self.timings, "remote": self.remote,
                "fused_shifts": self.fused_shifts, "tuning": self.tuning,
                "summary": self.summary()}

    def summary(self) -> str:
        head = f"tvm {self.kind}: built for {self.target}"
        if self.fused_shifts:
            head += f" ({self.fused_shifts} shift + 1x1 pairs fused)"
        if self.tuning is not None:
            head += f"; {self.tuning['summary']}"
        if not self.ran:
            return f"{head}; not run ({self.skipped})"
        c = self.comparison
        verdict = "matches onnxruntime" if c["passed"] else "MISMATCH against onnxruntime"
        where = ""
        if self.remote is not None:
            where = (f"; ran on {self.remote['remote']} ({self.remote['key']}): median "
                     f"{self.remote['median_ms']:.3g} ms over {self.remote['runs']} runs")
        return (f"{head}; {verdict} (max abs {c['max_abs']:.3g}, max rel {c['max_rel']:.3g})"
                f"{where}")


def check_model(model: onnx.ModelProto, kind: str, feeds: dict[str, np.ndarray],
                tolerance: Tolerance | None = None, out_dir: "str | Path | None" = None,
                schedules: bool = True, remote=None, tune_trials: int | None = None) -> TvmCheck:
    """Import, build, run and compare ``model`` against onnxruntime on ``feeds``; export the build
    to ``out_dir`` when given. ``remote`` (a ``remote.RemoteSpec``) runs and times it on an RPC
    server instead of here. On CUDA without a GPU (and no remote) the build is made (and
    exported) but not run. ``tune_trials`` (llvm) tunes with MetaSchedule into the persistent
    database (``tuning.py``), reusing what it already holds; with ``remote`` the candidates
    are measured on the RPC server too."""
    kind = parse_kind(kind)
    started = time.perf_counter()
    mod = import_onnx(model, feeds)
    target = tvm_target(kind)
    result = TvmCheck(kind, str(target.attrs.get("mcpu") or target.attrs.get("arch") or kind),
                      schedules)
    result.timings["import"] = time.perf_counter() - started
    if kind == "llvm" and schedules:
        result.fused_shifts = shift_pairs(mod)
    log = None
    if tune_trials is not None:
        if kind != "llvm":
            raise BadInputError("--tvm-tune measures candidates on this machine: it goes with "
                                "--tvm llvm only")
        log = TuningLog(tune_trials, str(tuning_dir()), remote=remote)
    started = time.perf_counter()
    executable = build(mod, kind, schedules, target, log)
    result.timings["build"] = time.perf_counter() - started
    if log is not None:
        result.tuning = {**log.to_dict(), "summary": log.summary()}
    if out_dir is not None:
        result.exported = export(executable, kind, out_dir)
    if kind == "cuda" and remote is None and not gpu_present():
        result.skipped = "no CUDA GPU on this machine"
        return result
    started = time.perf_counter()
    args = [feeds[i.name] for i in graph_inputs(model)]
    if remote is not None:
        actual, result.remote = run_remote(executable, kind, args, remote)
    else:
        actual = run_executable(executable, kind, args)
    result.timings["run"] = time.perf_counter() - started
    reference = run(model, feeds)
    outputs = [o.name for o in model.graph.output]
    result.ran = True
    result.comparison = compare_outputs(reference, dict(zip(outputs, actual)), outputs,
                                        tolerance or Tolerance(), "reassociating")
    return result
