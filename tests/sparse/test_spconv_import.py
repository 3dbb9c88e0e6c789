"""The spconv converter against spconv 2.3.8's own forward: the checked-in fixture holds small
spconv networks as our converter's first stage read them (``describe``, with torch), their inputs
and spconv's outputs (make_spconv_net_fixture.py); here the second stage (no torch) builds the
ONNX model, the pipeline lowers and verifies it, and onnxruntime's result must equal spconv's,
keyed by coordinate. Where torch and spconv are installed, the first stage runs too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convrewrite import api
from convrewrite.sparse.spconv_import import (Layer, SpconvImportError, keyed_difference,
                                              load_layers, to_onnx)
from convrewrite.verify import run
from tests.sparse.cases import HOST
from tests.sparse.make_spconv_net_fixture import NETS

FIXTURES = Path(__file__).with_name("spconv_net_fixture")


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("constant", [False, True])
def test_converted_net_equals_spconv(name, constant):
    layers, data = load_layers(FIXTURES / f"{name}.npz")
    grid, coords, features = tuple(data["grid"]), data["coords"], data["features"]
    model = to_onnx(layers, grid, features.shape[1], coords=coords if constant else None)
    feeds = {"features": features} if constant else {"features": features, "coordinates": coords}
    rewritten, report = api.rewrite(model, HOST, inputs=feeds)
    assert report.status == "ok", report.render()
    assert all(r.verify["passed"] for r in report.records) and report.end_to_end["passed"]
    got = run(rewritten, feeds)
    err = keyed_difference(got["out_coordinates"], got["out_features"], data["out_coordinates"],
                           data["out_features"])
    assert err < 1e-4, err
    kinds = [r.rewrite.split()[0] for r in report.records]
    assert "inverse" in kinds and "submanifold" in kinds and "regular" in kinds
    inverse = next(r for r in report.records if r.rewrite.startswith("inverse"))
    assert "read backwards" in " ".join(inverse.notes)


def test_unknown_keys_and_layers_are_clear_errors():
    layers, data = load_layers(FIXTURES / "unet3d.npz")
    grid = tuple(data["grid"])
    inverse = next(i for i, layer in enumerate(layers) if layer.kind == "inverse")
    bad = layers[:inverse] + [Layer("inverse", "up", {**layers[inverse].attrs,
                                                      "indice_key": "nope"},
                                    layers[inverse].weights)]
    with pytest.raises(SpconvImportError, match="indice_key 'nope' names no earlier SparseConv"):
        to_onnx(bad, grid, 4)
    with pytest.raises(SpconvImportError, match="5 input channels after 4"):
        to_onnx([Layer("subm", "c", {"kernel": [3] * 3, "stride": [1] * 3, "padding": [0] * 3,
                                     "dilation": [1] * 3, "indice_key": None, "ndim": 3},
                       {"weight": np.zeros((2, 3, 3, 3, 5), np.float32)})], grid, 4)


def test_describe_reads_spconv_modules():
    pytest.importorskip("torch")
    pytest.importorskip("spconv")
    from convrewrite.sparse.spconv_import import describe
    from tests.sparse.make_spconv_net_fixture import build
    layers, _ = load_layers(FIXTURES / "unet3d.npz")
    fresh = describe(build("unet3d").eval())
    assert [(a.kind, a.name, a.attrs) for a in fresh] == [(b.kind, b.name, b.attrs)
                                                          for b in layers]
