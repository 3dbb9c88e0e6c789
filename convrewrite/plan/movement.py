"""A data-movement region's replacement as a list of steps, planned from the index map probing
found (output element -> flat index of the input element it copies), checked by replaying it on
the probe in numpy, and made batch-agnostic by planning at two batch sizes: the one extent of a
Reshape that scales with the batch becomes -1, everything else must agree.

Steps: ``("reshape", dims)``, ``("transpose", perm)``, ``("gather", indices)`` (axis 1),
``("slice", [starts, ends, axes])`` (step 1),
``("reduce", axes)`` (keepdims 0: the reduction the region fed, over a view merging its axes).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..decline import Decline
from .permutation import plan_transposes, strided_box


def movement_steps(index: np.ndarray, total: int, max_rank: int | None,
                   allows: Callable[[str], bool]) -> tuple[list[tuple], str] | Decline:
    """``x.flat[index]`` (x has ``total`` elements, its batch ``index`` may keep as axis 0), by
    preference: Transposes over merged axes when the map permutes them; a Slice of one box of a
    view then Transposes when it selects a strided box (qkv[:, :, 0] of a 5-D attention view);
    a Gather over an [N, -1] view (per sample when the batch axis is kept). ``allows``: the
    target's ops."""
    if index.size == total:
        steps = _transposed(index, max_rank, allows)
        if steps is not None:
            return steps
    box = strided_box(index, total) if allows("Slice") else None
    if box is not None and len(box[0]) <= (max_rank or len(box[0])):
        view, starts, ends = box
        picked = np.arange(total, dtype=np.int64).reshape(view)[
            tuple(slice(a, b) for a, b in zip(starts, ends))]
        where = np.full(total, -1, dtype=np.int64)
        where[picked.reshape(-1)] = np.arange(picked.size, dtype=np.int64)
        moved = _transposed(where[index], max_rank, allows)
        if moved is not None:
            cut = [("reshape", view), ("slice", [[a for a, b, e in zip(starts, ends, view)
                                                  if (a, b) != (0, e)],
                                                 [b for a, b, e in zip(starts, ends, view)
                                                  if (a, b) != (0, e)],
                                                 [k for k, (a, b, e) in enumerate(
                                                     zip(starts, ends, view)) if (a, b) != (0, e)]])]
            return cut + moved[0], f"a Slice of a {len(view)}-D view, then {moved[1]}"
    if not allows("Gather"):
        return Decline("the target takes no Gather, and the region is no permutation or strided "
                       "box of merged axes that its Transpose and Slice could do")
    batch = index.shape[0] if index.ndim else 1
    rows = index.reshape(batch, -1) if total % batch == 0 else None
    per_sample = total // batch
    keeps = rows is not None and np.array_equal(
        rows, rows[:1] + np.arange(batch, dtype=np.int64)[:, None] * per_sample)
    view = [batch, per_sample] if keeps else [1, total]
    indices = np.ascontiguousarray(rows[0] if keeps else index.reshape(-1), dtype=np.int64)
    return [("reshape", view), ("gather", indices), ("reshape", list(index.shape))], \
        f"a Gather of {indices.size} elements{' per sample' if keeps else ''}"


def _transposed(index: np.ndarray, max_rank: int | None,
                allows: Callable[[str], bool]) -> tuple[list[tuple], str] | None:
    """The permutation ``index`` as Reshapes and Transposes over merged axes, if it is one and
    the target takes what it needs."""
    plan = plan_transposes(index, max_rank)
    if plan is None:
        return None
    steps = []
    for view, perm in zip(plan.views, plan.perms):
        steps.append(("reshape", list(view)))
        if list(perm) != sorted(perm):
            steps.append(("transpose", list(perm)))
    moves = sum(kind == "transpose" for kind, _ in steps)
    if moves and not allows("Transpose"):
        return None
    form = "views only (the order is kept)" if not moves else \
        f"one Transpose over {len(plan.views[0])} merged axes" if moves == 1 else \
        f"{moves} Transposes of at most {plan.rank} axes"
    return steps + [("reshape", list(index.shape))], form


def reduction_view(shape, axes: list[int], max_rank: int) -> tuple[list[int], list[int]] | Decline:
    """(view, its reduced axes): adjacent axes reduced alike merged, single elements dropped, so
    a reduction over a tensor above the target's rank runs on one within it (view [] when only
    single elements are reduced: no reduction is left)."""
    groups: list[list] = []           # [reduced?, extent]
    for axis, extent in enumerate(shape):
        if extent == 1:
            continue
        if groups and groups[-1][0] == (axis in axes):
            groups[-1][1] *= extent
        else:
            groups.append([axis in axes, extent])
    if not any(r for r, _ in groups):
        return [], []
    if len(groups) > max_rank:
        return Decline(f"the reduction keeps {len(groups)} separate runs of axes apart")
    return [e for _, e in groups], [k for k, (r, _) in enumerate(groups) if r]


def replay(steps: list[tuple], x: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """The steps run in numpy on ``x`` (a reduction as a sum), with each step's output shape."""
    shapes = []
    for kind, arg in steps:
        if kind == "reshape":
            x = x.reshape(arg)
        elif kind == "transpose":
            x = x.transpose(arg)
        elif kind == "gather":
            x = np.take(x, arg, axis=1)
        elif kind == "slice":
            cut = [slice(None)] * x.ndim
            for start, end, axis in zip(*arg):
                cut[axis] = slice(start, end)
            x = x[tuple(cut)]
        else:
            x = x.sum(axis=tuple(arg))
        shapes.append(x.shape)
    return x, shapes


def tidy(steps: list[tuple], ramps: list[np.ndarray]) -> list[tuple]:
    """Without the Reshapes that change nothing at every probe, and each run of Reshapes as its
    last (a view of a view)."""
    shapes = [[r.shape] + replay(steps, r)[1] for r in ramps]
    kept = [s for k, s in enumerate(steps)
            if not (s[0] == "reshape" and all(sh[k] == sh[k + 1] for sh in shapes))]
    return [s for k, s in enumerate(kept)
            if not (s[0] == "reshape" and k + 1 < len(kept) and kept[k + 1][0] == "reshape")]


def unify(plans: list[list[tuple]]) -> list[tuple] | Decline:
    """One step list for every probe batch: the same steps, a Reshape's extent that differs
    between them (the one holding the batch) as -1; or why the region depends on the batch in
    another way."""
    first = plans[0]
    if any(len(p) != len(first) or [s[0] for s in p] != [s[0] for s in first] for p in plans):
        return Decline("the region moves elements differently at another batch size")
    steps = []
    for k, (kind, arg) in enumerate(first):
        args = [p[k][1] for p in plans]
        if kind == "gather":
            if any(not np.array_equal(a, arg) for a in args):
                return Decline("the region mixes elements of different samples")
            steps.append((kind, arg))
            continue
        if kind == "reshape":
            if any(len(a) != len(arg) for a in args):
                return Decline("the region's views differ in rank at another batch size")
            varying = [i for i in range(len(arg)) if len({a[i] for a in args}) > 1]
            if len(varying) > 1:
                return Decline("more than one extent of a view scales with the batch")
            arg = [-1 if i in varying else d for i, d in enumerate(arg)]
        elif any(list(a) != list(arg) for a in args):
            return Decline("the region moves elements differently at another batch size")
        steps.append((kind, list(arg)))
    return steps


def reproduces(steps: list[tuple], ramp: np.ndarray, expected: np.ndarray) -> bool:
    """Do the steps give the probe's own answer (the plan's self-check)?"""
    got, _ = replay(steps, ramp)
    return got.shape == expected.shape and np.array_equal(got, expected)


__all__ = ["movement_steps", "reduction_view", "replay", "reproduces", "tidy", "unify"]
