"""Blow-up guards: lowerings that multiply weights or nodes stop here and say so, instead of
writing a model that does not fit in memory (a 73x73 dense kernel for a 960->256 conv is 5 GB);
and the guard every planner shares on what the target's ``ops:`` list runs."""

from __future__ import annotations

from ..decline import Decline

MAX_LOWERED_WEIGHTS = 64_000_000
MAX_LOWERED_NODES = 1024
# A tiled conv becomes one conv per tile; measured here, a 1-D conv over 3M samples on k210 (5,883
# tiles) rewrites in 241 s and 3.7 GB, so 8192 tiles is minutes, and a declared 1e8-sample input
# (195,313 tiles) is refused at once instead of running for hours.
MAX_LOWERED_TILES = 8192


def missing_ops(target, ops) -> "Decline | None":
    """The Decline for ops the target's ``ops:`` list lacks, or None."""
    missing = sorted(op for op in set(ops) if not target.allows_op(op))
    if missing:
        return Decline(f"the target's ops list lacks {', '.join(missing)}")
    return None
