"""Vela's estimate, like for like.

Vela times NPU work only, so where the original runs some ops on the CPU and the rewrite runs them
on the NPU, the two totals cover different work (a U-Net decoder's CPU ConvTransposes are "free"
in the original's estimate and cost cycles in the rewrite's). This compares the two over the same
work: the parts of the model that ran wholly on the NPU in the original, by Vela's per-layer
cycles (``attribute_cycles``), and says what the rest is: the original's CPU ops and what the
rewrite spends on the NPU where they were.

Parts: the two TFLite op lists are paired op for op where an op is the same work on both sides,
i.e. the same TFLite type, output element count and MACs (so a 5-D ADD folded to 4-D is still
the same op), nearest in relative place in execution order. The ops left unpaired on each side form
connected regions (through the tensors between them), and a region of the rewrite is tied to a
region of the original when both read the output of the same paired op (or graph input), or both
feed the same paired op (or graph output). Each pair, and each group of tied regions, is a part:
"like for like" where every original op in it ran on the NPU, a CPU part where some ran on the
CPU (whether or not they still do after the rewrite).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from math import prod
from typing import TYPE_CHECKING

if TYPE_CHECKING:       # vela.py imports this module
    from .vela import OpPlacement, VelaResult


@dataclass
class LikeForLike:
    """Cycles (Vela's clock) over the work the original ran wholly on the NPU, in both models,
    and the parts where the original ran ops on the CPU."""

    original_cycles: float        # the original's, over the parts wholly on its NPU
    rewritten_cycles: float       # the rewrite's, over the same parts
    cpu_ops: int                  # the original's CPU ops (all in the CPU parts)
    cpu_macs: int
    cpu_part_original_cycles: float   # the original's NPU cycles in those parts
    cpu_part_rewritten_cycles: float  # what the rewrite spends on the NPU there
    cpu_ops_left: int             # the rewrite's CPU ops (anywhere)
    cpu_macs_left: int
    unattributed_cycles: tuple[float, float]  # per-layer cycles naming no op (original, rewrite)
    seconds_per_cycle: float

    @property
    def ratio(self) -> float | None:
        return self.rewritten_cycles / self.original_cycles if self.original_cycles else None

    def to_dict(self) -> dict:
        s = self.seconds_per_cycle
        return {**asdict(self), "original_s": self.original_cycles * s,
                "rewritten_s": self.rewritten_cycles * s,
                "cpu_part_original_s": self.cpu_part_original_cycles * s,
                "cpu_part_rewritten_s": self.cpu_part_rewritten_cycles * s, "ratio": self.ratio}


def signature(op: OpPlacement) -> tuple:
    return op.type, prod(op.shape), op.macs


def pair_ops(original: list[OpPlacement], rewritten: list[OpPlacement],
             original_ops: dict | None = None, rewritten_ops: dict | None = None
             ) -> dict[int, int]:
    """Original op index -> rewritten op index, for ops that are the same work on both sides: of
    the rewrite's ops with the same signature, the one that reads the most of what this op's
    paired producers became, then the one whose readers share the most signatures with this op's
    readers (given the op lists ``original_ops``, ``rewritten_ops``), then the one at the nearest
    relative place in execution order (a rewrite that adds ops shifts the rest; identical blocks
    stay in order). Without the first two a residual Add whose inputs ran on the CPU paired with
    a conv split's partial-sum Add of the same shape (r3d_18), and the Add after it with the
    residual Add before it."""
    waiting: dict[tuple, list[int]] = defaultdict(list)
    for op in rewritten:
        waiting[signature(op)].append(op.index)
    reads_a, readers_a = _op_links(original, original_ops)
    reads_b, readers_b = _op_links(rewritten, rewritten_ops)
    a, b = max(len(original), 1), max(len(rewritten), 1)
    pairs: dict[int, int] = {}
    for op in original:
        candidates = waiting.get(signature(op))
        if candidates:
            became = {pairs[p] for p in reads_a[op.index] if p in pairs}
            feeds = readers_a[op.index]
            best = min(candidates, key=lambda j: (-len(became & reads_b[j]),
                                                  -len(feeds & readers_b[j]),
                                                  abs(j / b - op.index / a)))
            candidates.remove(best)
            pairs[op.index] = best
    return pairs


def _op_links(placed: list[OpPlacement], ops: dict | None) -> tuple[list[set], list[set]]:
    """Per op, the ops it reads (their indices) and the signatures of the ops that read it;
    empty sets without an op list."""
    if ops is None:
        return [set() for _ in placed], [set() for _ in placed]
    reads, read_by = _neighbours(ops)
    return ([{j for kind, j in r if kind == "op"} for r in reads],
            [{signature(placed[j]) for kind, j in r if kind == "op"} for r in read_by])


def _neighbours(ops: dict) -> tuple[list[list[tuple]], list[list[tuple]]]:
    """Per op: what it reads from (op index or graph input) and what reads it (op index or
    graph output), as ("op", i) / ("input", k) / ("output", k)."""
    producer = {t["name"]: ("input", k) for k, t in enumerate(ops["inputs"]) if t}
    for i, op in enumerate(ops["ops"]):
        for t in op["outputs"]:
            if t:
                producer[t["name"]] = ("op", i)
    outputs = {t["name"]: ("output", k) for k, t in enumerate(ops["outputs"]) if t}
    reads = [[producer[t["name"]] for t in op["inputs"] if t and t["name"] in producer]
             for op in ops["ops"]]
    read_by: list[list[tuple]] = [[] for _ in ops["ops"]]
    for i, sources in enumerate(reads):
        for kind, j in sources:
            if kind == "op":
                read_by[j].append(("op", i))
    for i, op in enumerate(ops["ops"]):
        read_by[i] += [outputs[t["name"]] for t in op["outputs"] if t and t["name"] in outputs]
    return reads, read_by


class _Groups:
    """Union-find over ("original" | "rewritten", op index)."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        self.parent[self.find(a)] = self.find(b)


def parts(original: dict, rewritten: dict, pairs: dict[int, int]) -> list[tuple[list, list]]:
    """The parts, each as (original op indices, rewritten op indices)."""
    back = {r: o for o, r in pairs.items()}
    groups = _Groups()
    borders: dict[tuple, list] = defaultdict(list)
    for side, ops, paired in (("original", original, pairs), ("rewritten", rewritten, back)):
        reads, read_by = _neighbours(ops)
        for i in range(len(ops["ops"])):
            if i in paired:
                continue
            groups.find((side, i))
            for direction, nodes in (("after", reads[i]), ("before", read_by[i])):
                for kind, j in nodes:
                    if kind == "op" and j not in paired:
                        groups.union((side, i), (side, j))
                    else:       # a paired op, named by its original index, or a graph end
                        shared = j if kind != "op" or side == "original" else paired[j]
                        borders[(direction, kind, shared)].append((side, i))
    for members in borders.values():
        for m in members[1:]:
            groups.union(members[0], m)
    found: dict = defaultdict(lambda: ([], []))
    for node in list(groups.parent):
        side, i = node
        found[groups.find(node)][0 if side == "original" else 1].append(i)
    return [([o], [r]) for o, r in pairs.items()] + list(found.values())


def like_for_like(original: VelaResult, original_ops: dict, rewritten: VelaResult,
                  rewritten_ops: dict) -> LikeForLike | None:
    """The comparison, or None where it cannot be made: a side has no placement (rejected,
    crashed, no TFLite), no per-layer figures, or no estimate."""
    for r in (original, rewritten):
        if r.failure or not r.cycles or r.inference_time_s is None or \
                any(op.npu and op.cycles is None for op in r.ops):
            return None
    a, b = original.ops, rewritten.ops
    like = [0.0, 0.0]
    on_cpu = {"ops": 0, "macs": 0, "original": 0.0, "rewritten": 0.0}
    for olds, news in parts(original_ops, rewritten_ops,
                            pair_ops(a, b, original_ops, rewritten_ops)):
        npu_old = sum(a[i].cycles for i in olds if a[i].npu)
        npu_new = sum(b[j].cycles for j in news if b[j].npu)
        cpu = [a[i] for i in olds if not a[i].npu]
        if cpu:
            on_cpu["ops"] += len(cpu)
            on_cpu["macs"] += sum(op.macs for op in cpu)
            on_cpu["original"] += npu_old
            on_cpu["rewritten"] += npu_new
        else:
            like[0] += npu_old
            like[1] += npu_new
    left = rewritten.cpu_ops
    return LikeForLike(like[0], like[1], on_cpu["ops"], on_cpu["macs"], on_cpu["original"],
                       on_cpu["rewritten"], len(left), sum(op.macs for op in left),
                       (original.unattributed_cycles, rewritten.unattributed_cycles),
                       original.inference_time_s / original.cycles)
