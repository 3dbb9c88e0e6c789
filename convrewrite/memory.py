"""Whether verification fits in this machine's memory, asked before anything is allocated.

Linux lets a process allocate more than it can touch and then kills it (and perhaps a neighbour)
when the pages are used: a model that declares a 60000x60000 input, or an op that blows a tensor up
to tens of GB, would take the machine down instead of getting a one-line error. So the feeds and the
tensors of a run are sized first, against what the machine can give now (MemAvailable, the
cgroup's limit, the address-space rlimit; ``CONVREWRITE_MAX_MEMORY`` overrides, e.g. ``8G``), and a
run that cannot fit is refused with what it needs and how to make it smaller.
"""

from __future__ import annotations

import os
import re
from math import prod
from pathlib import Path

import numpy as np

from .errors import BadInputError

ENV = "CONVREWRITE_MAX_MEMORY"
# What verification holds at its peak, over the sum of the rewritten graph's tensors: the checks'
# run returns every record's boundary tensors and runs the original pieces beside the rewritten
# ones, onnxruntime's arena rounds its growth up, and the comparisons make float64 differences.
# Measured: a 1-D conv over 1e7 samples on k210 (tensors 0.93 GiB, feeds 38 MiB) peaked at 4.09 GB
# resident (4.3x); over 1e8 samples (tensors 9.3 GiB) it was killed at 21.7 GB, still rising.
RUN_PEAK_FACTOR = 4
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
RESIZABLE = "give smaller sizes with --input-shape, or pass --no-verify to rewrite without verifying"
FIXED = "pass --no-verify to rewrite without verifying, or verify where more memory is free"


class TooLargeError(BadInputError):
    """The model, at the sizes it would be run at, needs more memory than this machine has (exit 2)."""


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _parse(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise BadInputError(f"{ENV}={text!r}: expected a size such as 8G, 512M or 1073741824")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _meminfo_available() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def _cgroup_room() -> int | None:
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        used = int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def _rlimit_room() -> int | None:
    try:
        import resource
    except ImportError:             # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft in (resource.RLIM_INFINITY, -1):
        return None
    try:                            # what this process has mapped already
        size_pages = int(Path("/proc/self/statm").read_text().split()[0])
        mapped = size_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        mapped = 0
    return max(soft - mapped, 0)


def available_bytes() -> int | None:
    """What this process can still allocate and touch; None where nothing says (no limit known)."""
    override = os.environ.get(ENV)
    if override:
        return _parse(override)
    known = [n for n in (_meminfo_available(), _cgroup_room(), _rlimit_room()) if n is not None]
    return min(known) if known else None


def tensor_bytes(shape, dtype) -> int:
    return prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def require(need: int, what: str, resizable: bool) -> None:
    """Refuse, in one line, a run that needs ``need`` bytes (``what`` says for what);
    ``resizable``: some input has a symbolic size that --input-shape can make smaller."""
    room = available_bytes()
    if room is not None and need > room:
        raise TooLargeError(f"verification needs about {gib(need)} ({what}) and this machine "
                            f"has {gib(room)} free: {RESIZABLE if resizable else FIXED}")


def known_sizes(shapes: dict[str, tuple[tuple, np.dtype]]) -> dict[str, int]:
    """Bytes per tensor, for the tensors whose shape is fully known."""
    return {name: tensor_bytes(shape, dtype) for name, (shape, dtype) in shapes.items()
            if shape is not None
            and all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape)}
