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
``$XDG_CACHE_HOME/convrewrite/tuning``, else ``~/.cache/convrewrite/tuning``. Records are keyed
by the function's structure and the target (this CPU), so one database serves every model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError
from . import require_tvm
from .cpu_conv import ACC_BLOCK
from .cpu_schedule import SCHEDULED, TUNED, has_block


def tuning_dir() -> Path:
    """Where the tuning database lives (see the module docstring)."""
    explicit = os.environ.get("CONVREWRITE_TUNING_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "convrewrite" / "tuning"


@dataclass
class TuningLog:
    """What one build's tuning did: for the report."""
    trials: int
    database: str
    tuned: list[str] = field(default_factory=list)       # functions tuned in this build
    reused: list[str] = field(default_factory=list)      # found in the database
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"trials": self.trials, "database": self.database, "tuned": self.tuned,
                "reused": self.reused, "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        return (f"tuning: {len(self.tuned)} functions tuned ({self.trials} trials, "
                f"{self.seconds:.1f} s), {len(self.reused)} reused from {self.database}")


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
    """Module pass: tune the functions the database lacks, then apply the database."""
    tvm = require_tvm()
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

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
                        num_tuning_cores=len(os.sched_getaffinity(0)))
            log.tuned = sorted(missing)
        log.seconds = time.perf_counter() - started
        with target:
            return relax.transform.MetaScheduleApplyDatabase(str(work_dir))(mod)

    return _pass
