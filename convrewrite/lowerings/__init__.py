"""One registered lowering per conv family (``contract``): the rules it fixes, its planner, its
emitter. Every module of this package is imported here, so a new lowering registers itself by
existing; ``rules.LOWERING_ORDER`` says where the conv fixpoint tries it."""

from __future__ import annotations

import importlib
import pkgutil

from ..rules import LOWERING_ORDER
from .contract import LOWERINGS, Lowering, Planned, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "contract":
        importlib.import_module(f"{__name__}.{_module.name}")


def default_lowerings() -> tuple[Lowering, ...]:
    """An instance of every registered lowering, in ``rules.LOWERING_ORDER``."""
    return tuple(LOWERINGS[name]() for name in LOWERING_ORDER if name in LOWERINGS)


__all__ = ["LOWERINGS", "Lowering", "Planned", "default_lowerings", "register"]
