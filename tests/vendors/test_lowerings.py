"""Every lowering's output must pass the judge: for each rule of each Ethos-U preset, the probe
that breaks it, rewritten by us (and verified on onnxruntime), compiles with every op on the NPU
of the preset's own Vela core -- no fallback, no rejection.

Where a lowering does not exist yet the case is a strict xfail naming what it waits for, so it
turns red the day the lowering lands. One case per rule family on ethos-u55 is in CI's fast
subset (tests/vendors/subset.py); the rest is marked ``vendor_full``."""

from __future__ import annotations

import pytest

from convrewrite.vendors.probes import PROBES, by_name
from convrewrite.vendors.survey import (legality, preset_run, probe_outcomes, rewritten_probes,
                                        vela_presets)
from tests.vendors.subset import case, needed

PRESETS = vela_presets()
CASES = [(t, p) for t in PRESETS for p in PROBES if legality(p, t)]

# What is missing, per (preset, probe): issue 14 builds these lowerings.
WAITING = {
    # Vela 3 checks every op's tensors ("Tensor dimensions must be in the range [1, 65535]"):
    # the first op reading the model's own input, or the last writing its output, is over it
    # whatever we rewrite; our report names those ops (max_tensor_dim) and exits 3. Measured
    # 2026-12-04: 70000 wide, 7 of 11 TFLite ops on the CPU (the cuts of the input, the tiler's
    # full-width Pad and the Concats); 65537 channels, 2 of 7 (the cuts of the input).
    ("ethos-u55-vela3", "width 70000"): "the model's own 70000-wide input and output: no rewrite "
                                        "narrows the model's interface (Vela 3: dims <= 65535 "
                                        "on every op)",
    ("ethos-u55-vela3", "in 65537"): "the model's own input has 65537 channels: its Split goes "
                                     "to the CPU (Vela 3: dims <= 65535 on every op)",
    ("ethos-u55-vela3", "out 65537"): "the model's own output has 65537 channels (Vela 3: dims "
                                      "<= 65535): no conv rewrite can narrow it",
    ("ethos-u55-vela3", "conv 3-D"): "the model's input and output are 5-D: its Relu, "
                                     "onnx2tf's layout TRANSPOSE and the Reshapes to and from "
                                     "4-D stay 5-D, and Vela 3's core runs neither 4-D "
                                     "TRANSPOSE (perm 0 2 3 1 / 0 3 1 2) around the per-frame "
                                     "views: 18 of 72 ops on the CPU (measured 2026-12-02)",
}
@pytest.fixture(scope="module")
def rewritten(vendor_cache, request):
    return rewritten_probes(vendor_cache, *needed(request))


@pytest.fixture(scope="module")
def originals(vendor_cache, request):
    return probe_outcomes(vendor_cache, *needed(request))


@pytest.mark.parametrize("target, probe", [case(t, p) for t, p in CASES])
def test_rewrite_runs_on_the_npu(target, probe, rewritten, originals, request, needs_vendors):
    why = WAITING.get((target.name, probe.name))
    if why:
        request.applymarker(pytest.mark.xfail(reason=why, strict=True))
    case = rewritten[(target.name, probe.name)]
    assert case["status"] == "ok", f"not rewritten: {case['remaining']}"
    got = case["outcome"]
    assert got is not None and got.verdict == "npu", (
        f"{probe.what} rewritten ({'; '.join(case['rewrites'])}) on {preset_run(target)}: "
        f"{got.verdict if got else 'no result'}: {got.reason if got else ''}")
    before = originals[probe.name][preset_run(target)]
    if probe.slower_native and before.verdict == "npu":
        assert got.time_s < before.time_s, (
            f"Vela runs {probe.what} natively in {before.time_s * 1e3:.3g} ms, our rewrite "
            f"takes {got.time_s * 1e3:.3g} ms: the preset should not reject it")


def test_every_waiting_case_is_a_real_case():
    names = {(t.name, p.name) for t, p in CASES}
    assert set(WAITING) <= names, set(WAITING) - names
    assert all(by_name(p) for _, p in WAITING)
