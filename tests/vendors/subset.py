"""Which vendor tests are the fast subset CI runs, and what a module's selected tests need.

The whole judge chain is marked ``vendor``; all but a fast subset are also ``vendor_full``,
which the default run leaves out (``python -m pytest -m vendor`` runs the whole chain). The fast
subset: on the ``ethos-u55`` preset, one probe per rule family -- the family's first probe the
preset calls illegal, else its first -- in the probe table and, where the preset calls it
illegal, as our rewrite of it; and one whole-chain ``--vendor-check`` run of the CLI.

The module fixtures convert and compile only what the selected tests of their module ask for
(``needed``), on the preset's own (config, core) only, so the subset costs its own conversions,
not the table's.
"""

from __future__ import annotations

from functools import lru_cache

import pytest

from convrewrite.target import load_target
from convrewrite.vendors.probes import PROBES, Probe
from convrewrite.vendors.survey import legality, preset_run

FAST_PRESET = "ethos-u55"


@lru_cache(maxsize=None)
def representatives(preset: str) -> frozenset[str]:
    """Per rule family (``Probe.rule``), the probe the fast subset keeps for ``preset``."""
    target = load_target(preset)
    chosen: dict[str, tuple[str, bool]] = {}
    for probe in PROBES:
        broken = bool(legality(probe, target))
        if probe.rule not in chosen or (broken and not chosen[probe.rule][1]):
            chosen[probe.rule] = (probe.name, broken)
    return frozenset(name for name, _ in chosen.values())


def in_fast_subset(preset: str, probe: Probe) -> bool:
    return preset == FAST_PRESET and probe.name in representatives(FAST_PRESET)


def case(target, probe: Probe, *, id: str | None = None):
    """One (target, probe) parameter, marked ``vendor_full`` unless it is in the fast subset."""
    marks = () if in_fast_subset(target.name, probe) else (pytest.mark.vendor_full,)
    return pytest.param(target, probe, marks=marks, id=id or f"{target.name}-{probe.name}")


def needed(request) -> tuple[list, tuple[Probe, ...], list[tuple[str, str]]]:
    """The presets, probes and (config, core) runs the selected tests of the requesting module
    are parametrized with."""
    presets, probes = {}, {}
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module is request.module and "target" in params and "probe" in params:
            presets.setdefault(params["target"].name, params["target"])
            probes.setdefault(params["probe"].name, params["probe"])
    runs = list(dict.fromkeys(preset_run(t) for t in presets.values()))
    return list(presets.values()), tuple(probes.values()), runs
