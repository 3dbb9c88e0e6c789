"""The probe table as a test: every rule of every Ethos-U preset says what Vela does.

Each probe (convrewrite.vendors.probes) is compiled on each preset's accelerator config by the
preset's own core; a probe the preset calls legal must run wholly on the NPU, one it calls
illegal must fall back to the CPU or be rejected -- except the few Vela runs natively but slower
than our rewrite (``slower_native``; test_lowerings checks that the rewrite is faster). One probe
per rule family on ethos-u55 is in CI's fast subset (tests/vendors/subset.py); the rest is
marked ``vendor_full``."""

from __future__ import annotations

import pytest

from convrewrite.vendors.probes import PROBES
from convrewrite.vendors.survey import legality, preset_run, probe_outcomes, vela_presets
from tests.vendors.subset import case, needed

PRESETS = vela_presets()


@pytest.fixture(scope="module")
def outcomes(vendor_cache, request):
    presets, probes, runs = needed(request)
    return probe_outcomes(vendor_cache, presets, probes, runs)


@pytest.mark.parametrize("target, probe", [case(t, p) for t in PRESETS for p in PROBES])
def test_preset_rule_matches_vela(target, probe, outcomes, needs_vendors):
    got = outcomes[probe.name][preset_run(target)]
    assert got.verdict != "failed", f"the probe did not convert: {got.reason}"
    broken = legality(probe, target)
    if not broken:
        assert got.verdict == "npu", (f"{target.name} calls {probe.what!r} legal, but "
                                      f"{preset_run(target)} says {got.verdict}: {got.reason}")
    elif probe.slower_native and got.verdict == "npu":
        pass                                    # test_lowerings: our rewrite is faster
    else:
        assert got.verdict in ("cpu", "rejected"), (
            f"{target.name} rejects {probe.what!r} ({', '.join(broken)}), but "
            f"{preset_run(target)} runs it on the NPU")
