"""Dense convs over inputs named sparse (--sparse-input) become SparseConvs, scattered back to
dense; each rewrite verified against the dense conv, and the SparseConv against its dense
reference."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from convrewrite import api
from convrewrite.errors import BadInputError
from convrewrite.models.sparse_nets import masked_conv_net, random_mask
from convrewrite.verify import run
from tests.conv_cases import conv_model
from tests.sparse.cases import HOST


def sparse_image(shape, density, seed=0):
    rng = np.random.default_rng(seed)
    keep = rng.random((shape[0], 1, *shape[2:])) < density
    return (rng.uniform(-1, 1, shape) * keep).astype(np.float32)


def passes(report) -> Counter:
    return Counter(r.pass_name for r in report.records)


@pytest.mark.parametrize("kwargs", [
    dict(kernel=(3, 3), spatial=(12, 10), strides=(2, 1), pads=(1, 0, 2, 1)),
    dict(kernel=(3, 3), spatial=(9, 9), dilations=(2, 2), pads=(2, 2, 2, 2)),
    dict(kernel=(3, 3, 3), spatial=(6, 7, 5), strides=(2, 2, 2), pads=(1, 1, 1, 1, 1, 1)),
])
def test_data_mode_is_exact(kwargs):
    model = conv_model(cin=4, cout=6, **kwargs)
    x = sparse_image((1, 4, *kwargs["spatial"]), 0.15)
    rewritten, report = api.rewrite(model, HOST, sparse_inputs=["x_relu:all"], inputs={"x": x})
    assert report.status == "ok", report.render()
    assert passes(report) == {"dense_to_sparse": 1, "sparse_conv": 1}
    assert all(r.verify["passed"] for r in report.records) and report.end_to_end["passed"]
    assert "regular" in report.records[0].rewrite
    assert not any(n.op_type == "Conv" for n in rewritten.graph.node)
    for density in (0.0, 0.5, 1.0):         # any input, not just the one verified
        other = {"x": sparse_image(x.shape, density, seed=3)}
        np.testing.assert_allclose(run(rewritten, other)["y"], run(model, other)["y"],
                                   rtol=1e-5, atol=1e-5)


def test_masked_net_is_one_region():
    model = masked_conv_net()
    mask = random_mask(32, 0.1, seed=1)
    image = np.random.default_rng(1).uniform(-1, 1, (1, 8, 32, 32)).astype(np.float32)
    rewritten, report = api.rewrite(model, HOST, sparse_inputs=["mask:all"],
                                    inputs={"image": image, "mask": mask})
    assert report.status == "ok", report.render()
    (region,) = [r for r in report.records if r.pass_name == "dense_to_sparse"]
    assert "conv1 (submanifold 3x3), conv2 (submanifold 3x3), down (regular 3x3 stride [2, 2]" \
        in region.rewrite and "head (regular 1x1)" in region.rewrite
    assert region.output_name == "out" and "densified at out" in region.rewrite
    kinds = [r.rewrite.split()[0] for r in report.records if r.pass_name == "sparse_conv"]
    assert kinds == ["submanifold", "submanifold", "regular", "regular"]
    shared = [r for r in report.records if r.pass_name == "sparse_conv" and "shared" in r.rewrite]
    assert len(shared) == 1                 # conv2 reuses conv1's rulebook (same sites, same conv)
    assert not any(n.op_type == "Conv" for n in rewritten.graph.node)
    assert all(r.verify["passed"] for r in report.records) and report.end_to_end["passed"]
    counts = Counter(n.op_type for n in rewritten.graph.node)
    # the mask's sites are found once; the strided conv lists its own output sites (the index
    # grid form: a NonZero over its output grid), which the 1x1 head passes through
    listings = sorted(n.name.split("/")[0] for n in rewritten.graph.node if n.op_type == "NonZero")
    assert listings == ["down", "mask"]
    # features gathered twice (image, mask: [B, C, V] -> [C, B*V], picked rows -> [N, C]) and
    # densified once (the reverse pair); the other Transposes turn NonZero's [D, M] into sites
    written_by = {o: n for n in rewritten.graph.node for o in n.output}
    of_sites = sum(1 for n in rewritten.graph.node if n.op_type == "Transpose"
                   and written_by[n.input[0]].op_type == "NonZero")
    assert of_sites == 2 and counts["Transpose"] - of_sites <= 6


def test_seeded_mask_is_sparse():
    _, report = api.rewrite(masked_conv_net(image_size=16), HOST, sparse_inputs=["mask:all"])
    assert report.status == "ok"
    assert all(r.verify["passed"] for r in report.records)


def _constant_mask_model(mask: np.ndarray) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "mask"], ["xm"], name="in_mask"),
             helper.make_node("Conv", ["xm", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "mask"], ["y"], name="out_mask")]
    graph = helper.make_graph(
        nodes, "constant_mask", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                               [1, 3, 10, 10])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5, 10, 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(mask, "mask")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_constant_mask_precomputes_the_rulebook():
    mask = random_mask(10, 0.2, seed=4)
    model = _constant_mask_model(mask)
    rewritten, report = api.rewrite(model, HOST, sparse_inputs=["mask:all"])
    assert report.status == "ok", report.render()
    d2s, lowering = report.records
    assert "submanifold" in d2s.rewrite and "constant" in d2s.rewrite
    assert "precomputed" in lowering.rewrite
    assert not any(n.op_type in ("NonZero", "Unique", "Conv") for n in rewritten.graph.node)


def test_declines_say_why():
    grouped = conv_model(cin=4, cout=4, groups=2)
    rewritten, report = api.rewrite(grouped, HOST, sparse_inputs=["x_relu"])
    assert not report.records
    assert any("left dense" in n and "group 2" in n for n in report.recognised)
    _, report = api.rewrite(conv_model(cin=4, cout=4), "generic", sparse_inputs=["x_relu"])
    assert any("lacks" in n and "NonZero" in n for n in report.recognised)


def test_bad_names():
    model = conv_model(cin=4, cout=4)
    with pytest.raises(BadInputError, match="'nope': the model has no tensor of that name"):
        api.rewrite(model, HOST, sparse_inputs=["nope"])
    with pytest.raises(BadInputError, match="'y': no Conv reads it"):
        api.rewrite(model, HOST, sparse_inputs=["y"])


def test_cli_sparse_input(tmp_path):
    model_path, out, report = tmp_path / "masked.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(masked_conv_net(image_size=16), model_path)
    target = tmp_path / "host.yaml"
    target.write_text("name: host\n")
    proc = subprocess.run([sys.executable, "-m", "convrewrite.cli", str(model_path), "--target",
                           str(target), "--sparse-input", "mask:all", "-o", str(out), "--report",
                           str(report)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(report.read_text())
    assert Counter(r["pass_name"] for r in data["rewrites"]) == {"dense_to_sparse": 1,
                                                                  "sparse_conv": 4}
    assert all(r["verify"]["passed"] for r in data["rewrites"]) and data["end_to_end"]["passed"]
    onnx.checker.check_model(onnx.load(out))
    proc = subprocess.run([sys.executable, "-m", "convrewrite.cli", str(model_path), "--target",
                           str(target), "--sparse-input", "nope", "-o", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--sparse-input 'nope'" in proc.stderr
