"""Where convrewrite keeps what it caches outside the repository (tuning records, vendor venvs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(name: str, override: str) -> Path:
    """``$override`` if set, else ``$XDG_CACHE_HOME/convrewrite/NAME``, else
    ``~/.cache/convrewrite/NAME``."""
    explicit = os.environ.get(override)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "convrewrite" / name
