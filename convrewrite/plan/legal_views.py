"""A Transpose the target's every-op limits reject (a 4-D view with the patches or windows of an
attention folded into its batch: ``max_tensor_batch``) as Transposes over views it takes: the
batch rule reads only 4-D (and higher) tensors' axis 0, and a rank-3 view of the same elements
has none, so [B, a, b, c] -> [B, b, a, c] is [B, a, b*c] -> [B, b*c, a] then [B*b, c, a] ->
[B*b, a, c]: two Transposes, every view within the limits, and no piece per batch item (B
Transposes, a Split and a Concat). A Transpose moves every element once, whatever the view, so
the fewest Transposes is the cheapest form; the search is breadth first over the orders of the
merged axes (at most 6! of them), each step one Transpose whose view the target takes."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import permutations
from math import prod

from ..decline import Decline
from .permutation import Transposes, _runs, _step

MAX_AXES = 6                # merged axes searched (6! = 720 orders)


@dataclass(frozen=True)
class ViewLimits:
    """What a tensor an op reads may be: rank, batch of a 4-D (or higher) one, every extent."""

    max_rank: int | None
    max_batch: int | None
    max_dim: int | None

    def takes(self, view: tuple[int, ...]) -> bool:
        if self.max_rank is not None and len(view) > self.max_rank:
            return False
        if self.max_dim is not None and any(e > self.max_dim for e in view):
            return False
        return self.max_batch is None or len(view) < 4 or view[0] <= self.max_batch


@dataclass(frozen=True)
class ViewPlan:
    """The input's axes merged into ``atoms`` (input axes each, extent-1 axes dropped), the
    atoms' ``orders`` before and after each step, and the ``steps`` (views in atom extents, and
    perms over each view's axes)."""

    atoms: tuple[tuple[int, ...], ...]
    orders: tuple[tuple[int, ...], ...]
    steps: Transposes

    def view_axis_of(self, step: int, atom: int) -> int:
        """The axis of step ``step``'s view that holds ``atom``."""
        runs = _runs(self.orders[step], self.orders[step + 1])
        return next(k for k, run in enumerate(runs) if atom in run)


def merged_atoms(extents: list[int], perm: list[int]) -> tuple[tuple[tuple[int, ...], ...],
                                                                 tuple[int, ...]]:
    """(atoms, target): the input axes that stay adjacent and in order through ``perm``, each
    run one atom (axes of extent 1 dropped), and the atoms' order in the output."""
    kept = [a for a in range(len(extents)) if extents[a] != 1]
    out_order = [a for a in perm if a in kept]
    atoms = _runs(tuple(kept), tuple(out_order)) if kept else []
    first = {atom[0]: k for k, atom in enumerate(atoms)}
    target = tuple(first[a] for a in out_order if a in first)
    return tuple(atoms), target


def plan_views(extents: list[int], perm: list[int], limits: ViewLimits) -> ViewPlan | Decline:
    """The fewest Transposes over views ``limits`` takes that make ``perm`` of a tensor of
    ``extents`` (the symbolic batch counted at 1, as the target runs it)."""
    atoms, target = merged_atoms(extents, perm)
    sizes = [prod(extents[a] for a in atom) for atom in atoms]
    over = [s for s in sizes if limits.max_dim is not None and s > limits.max_dim]
    if over:
        return Decline(f"an axis of {over[0]} moves whole, over the target's {limits.max_dim}")
    if len(atoms) > MAX_AXES:
        return Decline(f"{len(atoms)} axes move apart; the search takes {MAX_AXES} at most")
    start = tuple(range(len(atoms)))
    came: dict[tuple, tuple | None] = {start: None}
    queue = deque([start])
    while queue and target not in came:
        order = queue.popleft()
        for after in permutations(start):
            if after in came:
                continue
            view, _ = _step(sizes, order, after)
            if limits.takes(view):
                came[after] = order
                queue.append(after)
    if target not in came:
        return Decline("no sequence of Transposes over views the target takes makes it")
    path = [target]
    while came[path[-1]] is not None:
        path.append(came[path[-1]])
    path.reverse()
    views, perms = [], []
    for before, after in zip(path, path[1:]):
        view, step_perm = _step(sizes, before, after)
        views.append(view)
        perms.append(step_perm)
    return ViewPlan(atoms, tuple(path), Transposes(tuple(views), tuple(perms)))


def broadcast_groups(out_extents: list[int], in_shapes: list[list[int]], limits: ViewLimits
                     ) -> list[tuple[int, int]] | Decline:
    """[start, stop) of the output's axes merged into the fewest groups (at most 3: a view with
    no batch to limit) such that every input, aligned to the output's rank as broadcasting
    does, has each group either whole or all 1s, and each group's extent fits the target: the
    op then runs on those views elementwise as it did."""
    rank = len(out_extents)
    aligned = [[1] * (rank - len(s)) + list(s) for s in in_shapes]

    def fits(a: int, z: int) -> bool:
        whole = all(all(s[k] == out_extents[k] for k in range(a, z)) or
                    all(s[k] == 1 for k in range(a, z)) for s in aligned)
        return whole and (limits.max_dim is None or prod(out_extents[a:z]) <= limits.max_dim)

    for cuts in ([(0, rank)], *([(0, i), (i, rank)] for i in range(1, rank)),
                 *([(0, i), (i, j), (j, rank)] for i in range(1, rank) for j in range(i + 1, rank))):
        if all(fits(a, z) for a, z in cuts) and limits.takes(tuple(prod(out_extents[a:z])
                                                                   for a, z in cuts)):
            return list(cuts)
    return Decline("no view of at most 3 axes keeps every input's broadcast whole")
