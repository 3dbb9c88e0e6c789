"""MetaSchedule tuning for ``--tvm llvm --tvm-tune TRIALS``, with a database that persists.

Our own kernels (the conv-as-GEMM kernel, the fused shift kernel) come with their schedules;
what TVM would otherwise run with our generic parallel schedule (grouped and depthwise convs,
pooling, reductions, elementwise functions) is what gets tuned. ``TuneCPU`` sits in the build
pipeline after fusion: it looks each such PrimFunc up in the tuning database, tunes only those
it does not find (``TRIALS`` measured candidates in all, spread over them by MetaSchedule's task
scheduler), and applies the best record of every function the database knows. A second build of
the same model (or any model with the same functions) finds them all and tunes nothing.

The database (MetaSchedule's JSON database: ``database_workload.json``,
``database_tuning_record.json``) lives in ``$CONVREWRITE_TUNING_DIR`` if set, else
``$XDG_CACHE_HOME/convrewrite/tuning``, else ``~/.cache/convrewrite/tuning``, one sub-folder per
target (``database_key``: kind, -mcpu and a hash of the whole target, cores included), because
MetaSchedule looks records up by the function alone: a record tuned on another CPU would be
applied here as if it were this CPU's. Within a target, records are keyed by the function's
structure, so one database serves every model.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError
from ..paths import cache_dir
from . import require_tvm
from .kernels.conv_gemm import ACC_BLOCK
from .cpu_schedule import SCHEDULED, TUNED, has_block


def tuning_dir() -> Path:
    """Where the tuning database lives (see the module docstring)."""
    return cache_dir("tuning", "CONVREWRITE_TUNING_DIR")


def database_key(target) -> str:
    """The sub-folder of one target's records: readable, and distinct for distinct targets."""
    cpu = str(target.attrs.get("mcpu") or target.attrs.get("arch") or "generic")
    digest = hashlib.sha1(str(target).encode()).hexdigest()[:10]
    return "-".join(part for part in (target.kind.name, cpu, digest) if part)


@dataclass
class TuningLog:
    """What one build's tuning did: for the report."""
    trials: int
    database: str
    tuned: list[str] = field(default_factory=list)       # functions tuned in this build
    reused: list[str] = field(default_factory=list)      # found in the database
    seconds: float = 0.0
    remote: object = None         # a remote.RemoteSpec: candidates measured there, not here

    def to_dict(self) -> dict:
        return {"trials": self.trials, "database": self.database, "tuned": self.tuned,
                "reused": self.reused, "seconds": round(self.seconds, 3),
                "measured_on": self.remote.address if self.remote is not None else "here"}

    def summary(self) -> str:
        where = f" measured on {self.remote.address}" if self.remote is not None else ""
        return (f"tuning: {len(self.tuned)} functions tuned ({self.trials} trials{where}, "
                f"{self.seconds:.1f} s), {len(self.reused)} reused from {self.database}")


def runner_for(log: TuningLog):
    """MetaSchedule's runner: this machine, or the RPC server the tracker gives for the key
    (each candidate is uploaded and timed there)."""
    if log.remote is None:
        return "local"
    from tvm.s_tir import meta_schedule as ms
    remote = log.remote
    config = ms.runner.RPCConfig(tracker_host=remote.host, tracker_port=remote.port,
                                 tracker_key=remote.key, session_timeout_sec=remote.timeout_s)
    return ms.runner.RPCRunner(rpc_config=config)


def open_database(work_dir: Path):
    require_tvm()
    from tvm.s_tir import meta_schedule as ms
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot create the tuning database folder {work_dir}: "
                            f"{exc.strerror}") from None
    return ms.database.JSONDatabase(work_dir=str(work_dir), module_equality="structural")


def tunable(func) -> bool:
    """A PrimFunc none of our schedules owns (ours: the GEMM kernel, already-scheduled ones)."""
    from tvm.s_tir import Schedule
    attrs = func.attrs or {}
    if SCHEDULED in attrs or TUNED in attrs:
        return False
    return not has_block(Schedule(func), ACC_BLOCK)


def TuneCPU(target, trials: int, work_dir: Path, log: TuningLog):  # noqa: N802 - a TVM pass
    """Module pass: tune the functions ``target``'s database (under ``work_dir``) lacks, then
    apply that database."""
    tvm = require_tvm()
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    work_dir = Path(work_dir) / database_key(target)
    log.database = str(work_dir)

    @tvm.transform.module_pass(opt_level=0, name="convrewrite.TuneCPU")
    def _pass(mod, _ctx):
        started = time.perf_counter()
        database = open_database(work_dir)
        missing = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc) and tunable(func):
                if database.has_workload(tvm.IRModule({"main": func.with_attr(
                        "global_symbol", "main")})):
                    log.reused.append(gv.name_hint)
                else:
                    missing[gv.name_hint] = func
        if missing and trials > 0:
            ms.tune_tir(tvm.IRModule(missing), target, str(work_dir), max_trials_global=trials,
                        num_trials_per_iter=min(64, trials), database=database,
                        runner=runner_for(log),
                        num_tuning_cores=len(os.sched_getaffinity(0)))
            log.tuned = sorted(missing)
        log.seconds = time.perf_counter() - started
        with target:
            return relax.transform.MetaScheduleApplyDatabase(str(work_dir))(mod)

    return _pass
