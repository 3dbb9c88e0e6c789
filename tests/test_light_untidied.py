"""Without verification the untidied model is exported with its large weights as stand-ins (it
only feeds the tidy step) and for real only where tidying leaves it as it is: the returned model
is byte for byte the one verification returns."""

from __future__ import annotations

import pytest

from convrewrite import api, gs_graph, pipeline
from convrewrite.models import conv1d_net, demo_wide, resnet18

C64 = {"name": "c64", "conv": {"max_in_channels": 64, "max_out_channels": 64}}
CASES = [(demo_wide, C64), (resnet18, C64), (conv1d_net, "k210"), (resnet18, "k210")]


IDS = [f"{b.__name__}-{t if isinstance(t, str) else t['name']}" for b, t in CASES]


@pytest.mark.parametrize("build,target", CASES, ids=IDS)
def test_same_model_as_with_verification(build, target, monkeypatch):
    exports, tidied = [], []
    export, tidy = gs_graph.from_graph, pipeline._tidy

    def counted(graph, like, stand_ins=None):
        exports.append((id(graph), stand_ins is not None))
        return export(graph, like, stand_ins)

    def counted_tidy(m, *args):
        out = tidy(m, *args)
        tidied.append(out is not m)
        return out
    monkeypatch.setattr(pipeline, "from_graph", counted)
    monkeypatch.setattr(pipeline, "_tidy", counted_tidy)
    fast, report = api.rewrite(build(), target, verify=False)
    light = exports[0][1]
    assert report.records and light               # the untidied model: stand-ins
    # one export for real after it: the tidied model, or the lowered one where tidying changed
    # nothing (the tidy step changes the lowered graph in place: gs_graph.reinferred)
    assert [e[1] for e in exports[1:]] == [False] and len(tidied) == 1
    checked, verified = api.rewrite(build(), target)
    assert verified.status == "ok"
    assert fast.SerializeToString() == checked.SerializeToString()


def test_both_branches_are_taken():
    """Among the cases, tidying changes some models and leaves others (both paths checked)."""
    outcomes = set()
    tidy = pipeline._tidy
    for build, target in CASES:
        seen = []
        pipeline._tidy = lambda m, *a: (lambda out: seen.append(out is not m) or out)(tidy(m, *a))
        try:
            api.rewrite(build(), target, verify=False)
        finally:
            pipeline._tidy = tidy
        outcomes |= set(seen)
    assert outcomes == {True, False}
