"""Our CPU schedules, applied to the PrimFuncs TVM's fusion produced.

* a function holding our conv kernel (``kernels.conv_gemm``): its register-tiled implicit-GEMM schedule,
  with the fused elementwise consumers folded into the write-back;
* a function that dlight's CPU GEMV rule recognises (the classifier's matmul): that rule;
* any other function (pooling, adds, pads, reshapes, TVM's own conv for grouped convs):
  the outermost spatial loops fused and run in parallel, the innermost vectorised when its
  extent is a multiple of the vector width — nothing of the untuned default runs on one core.
"""

from __future__ import annotations

from . import require_tvm
from .kernels.conv_gemm import ACC_BLOCK, LANES, schedule_conv

SCHEDULED = "convrewrite.scheduled"       # PrimFunc attribute: a schedule was applied
TUNED = "tirx.is_scheduled"               # ... and MetaSchedule's, where it applied a record


def has_block(sch, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:           # noqa: BLE001 - the schedule raises when there is none
        return False


def schedule_parallel(sch) -> None:
    """Parallelise each root block's outer spatial loops; vectorise a suitable inner loop."""
    from tvm.s_tir import Schedule  # noqa: F401 - the type of sch
    root = sch.get_sblock("root") if has_block(sch, "root") else None
    blocks = sch.get_child_blocks(root) if root is not None else []
    for block in blocks:
        loops = sch.get_loops(block)
        info = sch.get(block)
        if not loops or any(iv.iter_type != 0 for iv in info.iter_vars):
            continue            # a reduction: left as it is (small ones only reach here)
        extents = [int(sch.get(lp).extent) for lp in loops]
        outer, work = [], 1
        for lp, ext in zip(loops[:-1], extents[:-1]):
            outer.append(lp)
            work *= ext
            if work >= 64:
                break
        if outer:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
        if extents[-1] % LANES == 0 and loops[-1] not in outer:
            _, inner = sch.split(loops[-1], factors=[None, LANES])
            sch.vectorize(inner)


def schedule_function(func, target):
    """The PrimFunc with our schedule applied (the function itself when none applies)."""
    require_tvm()
    from tvm.s_tir import Schedule
    from tvm.s_tir import dlight as dl
    if func.attrs is not None and (SCHEDULED in func.attrs or TUNED in func.attrs):
        return func                 # ours, or tuned by MetaSchedule (tuning.py)
    sch = Schedule(func)
    if has_block(sch, ACC_BLOCK):
        schedule_conv(sch)
        return sch.mod["main"].with_attr(SCHEDULED, 1)
    gemv = dl.cpu.GEMV().apply(func, target, False)
    if gemv is not None:
        return gemv.mod["main"].with_attr(SCHEDULED, 1)
    try:
        schedule_parallel(sch)
    except Exception:           # noqa: BLE001 - a shape our simple rule does not cover
        return func
    return sch.mod["main"].with_attr(SCHEDULED, 1)


def ScheduleCPU(target):  # noqa: N802 - named like the TVM passes it sits between
    """Module pass: schedule every PrimFunc of the module for the CPU ``target``."""
    tvm = require_tvm()

    @tvm.transform.module_pass(opt_level=0, name="convrewrite.ScheduleCPU")
    def _pass(mod, _ctx):
        updates = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc):
                updates[gv] = schedule_function(func, target)
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass
