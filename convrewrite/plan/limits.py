"""Blow-up guards: lowerings that multiply weights or nodes stop here and say so, instead of
writing a model that does not fit in memory (a 73x73 dense kernel for a 960->256 conv is 5 GB);
and the guard every planner shares on what the target's ``ops:`` list runs."""

from __future__ import annotations

from ..decline import Decline

MAX_LOWERED_WEIGHTS = 64_000_000
MAX_LOWERED_NODES = 1024


def missing_ops(target, ops) -> "Decline | None":
    """The Decline for ops the target's ``ops:`` list lacks, or None."""
    missing = sorted(op for op in set(ops) if not target.allows_op(op))
    if missing:
        return Decline(f"the target's ops list lacks {', '.join(missing)}")
    return None
