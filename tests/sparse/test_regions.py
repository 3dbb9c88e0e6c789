"""Sparse regions on tiny dense graphs (``--sparse-input``): what stays sparse, where the region
densifies and why, and that the result equals the dense model on any input (0%, a few %, half
and all sites active)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from convrewrite import api
from convrewrite.verify import run
from tests.sparse.cases import HOST

RNG = np.random.default_rng(0)


def _net(nodes, spatial=(12, 10), cin=3, inits=(), outputs=("y",)):
    """x [1, cin, *spatial] -> nodes -> outputs; ``inits`` (name, array)."""
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                     [1, cin, *spatial])],
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _conv(name, x, y, cin, cout, k=3, pad=1, stride=1, bias=True, rank=2):
    w = (RNG.standard_normal((cout, cin, *[k] * rank)) / np.sqrt(cin * k ** rank))
    inits = [(f"{name}.w", w)] + ([(f"{name}.b", RNG.uniform(-0.5, 0.5, cout))] if bias else [])
    node = helper.make_node("Conv", [x, f"{name}.w", *([f"{name}.b"] if bias else [])], [y],
                            name=name, pads=[pad] * (2 * rank), strides=[stride] * rank)
    return node, inits


def _sparse_x(shape, density, seed):
    rng = np.random.default_rng(seed)
    keep = rng.random((shape[0], 1, *shape[2:])) < density
    return (rng.uniform(-1, 1, shape) * keep).astype(np.float32)


def _rewrite(model, shape):
    rewritten, report = api.rewrite(model, HOST, sparse_inputs=["x:all"],
                                    inputs={"x": _sparse_x(shape, 0.1, 1)})
    assert report.status == "ok", report.render()
    assert all(r.verify["passed"] for r in report.records) and report.end_to_end["passed"]
    for density, seed in ((0.0, 2), (0.03, 3), (0.5, 4), (1.0, 5)):    # any input, not one
        x = {"x": _sparse_x(shape, density, seed)}
        for name in (o.name for o in model.graph.output):
            np.testing.assert_allclose(run(rewritten, x)[name], run(model, x)[name],
                                       rtol=1e-4, atol=1e-5)
    regions = [r for r in report.records if r.pass_name == "dense_to_sparse"]
    return rewritten, report, regions


def _ops(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def test_two_convs_stay_sparse_over_a_nonzero_background():
    """conv1's bias makes the background of conv2's input non-zero: conv2 (padded) reads it
    through a constant background map and stays sparse; densified once, at the output."""
    c1, i1 = _conv("conv1", "x", "c1", 3, 8)
    c2, i2 = _conv("conv2", "r1", "y", 8, 8)
    model = _net([c1, helper.make_node("Relu", ["c1"], ["r1"], name="relu1"), c2], inits=i1 + i2)
    rewritten, report, (region,) = _rewrite(model, (1, 3, 12, 10))
    assert "2 SparseConvs [conv1 (regular 3x3 pads [1, 1, 1, 1]), conv2 (regular 3x3" \
        in region.rewrite and "densified at y" in region.rewrite
    assert not any("densified" in n for n in region.notes)     # nothing densified on the way
    assert "Conv" not in _ops(rewritten)
    # the input's sites found once; each regular conv's output sites by its index grid's MaxPool
    sites = Counter("out_sites" in n.name for n in rewritten.graph.node if n.op_type == "NonZero")
    assert sites == {False: 1, True: 2} and _ops(rewritten)["MaxPool"] == 2
    assert "TopK" not in _ops(rewritten)


def test_densified_where_a_dense_op_reads_it():
    c1, i1 = _conv("conv1", "x", "c1", 3, 4)
    model = _net([c1, helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
                  helper.make_node("MaxPool", ["r1"], ["y"], name="pool", kernel_shape=[2, 2],
                                   strides=[2, 2])], inits=i1)
    rewritten, report, (region,) = _rewrite(model, (1, 3, 12, 10))
    assert "densified at r1" in region.rewrite
    assert "densified for pool (MaxPool): MaxPool has no sparse form here" in region.notes
    pools = [n.name for n in rewritten.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 2 and sum("out_sites" in p for p in pools) == 1    # the grid's, and pool


def test_same_sites_stay_sparse_other_sites_densify():
    """BN(conv1) + conv1 are on the same sites (an Add on the features); conv2's output is on
    the dilated sites, so Add(conv2, r1) densifies both."""
    c1, i1 = _conv("conv1", "x", "c1", 3, 4)
    c2, i2 = _conv("conv2", "s", "c2", 4, 4)
    bn = [("bn.scale", RNG.uniform(0.5, 1.5, 4)), ("bn.bias", RNG.uniform(-1, 1, 4)),
          ("bn.mean", RNG.uniform(-1, 1, 4)), ("bn.var", RNG.uniform(0.5, 1.5, 4))]
    model = _net([c1, helper.make_node("BatchNormalization", ["c1", *[n for n, _ in bn]], ["b1"],
                                       name="bn"),
                  helper.make_node("Add", ["b1", "c1"], ["s"], name="same_sites"),
                  c2, helper.make_node("Add", ["c2", "s"], ["y"], name="other_sites")],
                 inits=i1 + i2 + bn)
    _, _, (region,) = _rewrite(model, (1, 3, 12, 10))
    assert "2 SparseConvs" in region.rewrite and "2 ops on the features" in region.rewrite
    assert "densified for other_sites (Add): its operands are on different sites" in region.notes
    assert sorted([region.output_name, *region.more_outputs]) == ["c2", "s"]


def test_concat_and_per_channel_constants():
    c1, i1 = _conv("conv1", "x", "c1", 3, 4, bias=False)
    c2, i2 = _conv("conv2", "k", "y", 8, 2, k=1, pad=0)
    per_channel = ("scale", RNG.uniform(0.5, 2, (1, 4, 1, 1)))
    spatial = ("ramp", np.linspace(0, 1, 120).reshape(1, 1, 12, 10))
    model = _net([c1, helper.make_node("Mul", ["c1", "scale"], ["m"], name="per_channel"),
                  helper.make_node("Sigmoid", ["m"], ["g"], name="gate"),
                  helper.make_node("Concat", ["g", "c1"], ["k"], name="join", axis=1), c2,
                  helper.make_node("Mul", ["k", "ramp"], ["z"], name="spatial")],
                 inits=i1 + i2 + [per_channel, spatial], outputs=("y", "z"))
    _, _, (region,) = _rewrite(model, (1, 3, 12, 10))
    assert "2 SparseConvs" in region.rewrite and "3 ops on the features" in region.rewrite
    assert any("spatial (Mul): its constant operand [1, 1, 12, 10] is not one value per channel"
               in n for n in region.notes)


def test_grouped_conv_ends_the_region_with_its_reason():
    c1, i1 = _conv("conv1", "x", "c1", 3, 4)
    w = RNG.standard_normal((4, 2, 3, 3))
    model = _net([c1, helper.make_node("Conv", ["c1", "g.w"], ["y"], name="grouped", group=2,
                                       pads=[1] * 4)], inits=i1 + [("g.w", w)])
    _, report, (region,) = _rewrite(model, (1, 3, 12, 10))
    assert "densified at c1" in region.rewrite, report.recognised
    assert any("grouped: left dense although it reads sparse 'x' (grouped convs (group 2)" in n
               for n in report.recognised)


def test_conv_of_unknown_weight_shape_ends_the_region_with_its_reason():
    """A conv whose weight is computed with a shape nobody knows (a graph input of symbolic
    dims) is left dense with the reader's own reason; the region before it stays sparse (it
    used to crash: the reader's Decline was taken for a ConvSpec)."""
    c1, i1 = _conv("conv1", "x", "c1", 3, 4)
    model = _net([c1, helper.make_node("Conv", ["c1", "w2"], ["y"], name="computed",
                                       pads=[1] * 4)], inits=i1)
    model.graph.input.append(helper.make_tensor_value_info("w2", onnx.TensorProto.FLOAT,
                                                           ["a", "b", "c", "d"]))
    feeds = {"x": _sparse_x((1, 3, 12, 10), 0.1, 1),
             "w2": RNG.standard_normal((4, 4, 3, 3)).astype(np.float32)}
    _, report = api.rewrite(model, HOST, sparse_inputs=["x:all"], inputs=feeds)
    assert "computed: left dense although it reads sparse 'x' (weight shape is unknown)" \
        in report.recognised
    (region,) = [r for r in report.records if r.pass_name == "dense_to_sparse"]
    assert "1 SparseConvs [conv1" in region.rewrite and "densified at c1" in region.rewrite
    assert all(r.verify["passed"] for r in report.records) and report.end_to_end["passed"]


def test_3d_strided_then_one_by_one():
    c1, i1 = _conv("down", "x", "c1", 2, 4, stride=2, rank=3)
    c2, i2 = _conv("head", "r1", "y", 4, 3, k=1, pad=0, rank=3)
    model = _net([c1, helper.make_node("Relu", ["c1"], ["r1"], name="relu"), c2],
                 spatial=(6, 7, 8), cin=2, inits=i1 + i2)
    rewritten, report, (region,) = _rewrite(model, (1, 2, 6, 7, 8))
    assert "down (regular 3x3x3 stride [2, 2, 2]" in region.rewrite
    assert "head (regular 1x1x1)" in region.rewrite
    # the 1x1 conv's output sites are down's, listed by down's NonZero: passed through, no grid
    listings = sorted(n.name.split("/")[0] for n in rewritten.graph.node if n.op_type == "NonZero")
    assert listings == ["down", "x"] and _ops(rewritten)["MaxPool"] == 1
    (head,) = [r for r in report.records if r.node.startswith("head")]
    assert "its output sites are its input sites" in head.rewrite


def test_background_map_limit(monkeypatch):
    monkeypatch.setattr("convrewrite.sparse.region.MAP_LIMIT", 100)
    c1, i1 = _conv("conv1", "x", "c1", 3, 4)
    c2, i2 = _conv("conv2", "c1", "y", 4, 4)
    _, report, (region,) = _rewrite(_net([c1, c2], inits=i1 + i2), (1, 3, 12, 10))
    assert "1 SparseConvs [conv1" in region.rewrite and "densified at c1" in region.rewrite
    assert any("conv2: left dense" in n and "background map of 480 values (limit 100)" in n
               for n in report.recognised)


@pytest.mark.parametrize("density", [0.02])
def test_masked_style_chain_is_exact_on_other_masks(density):
    from convrewrite.models.sparse_nets import masked_conv_net, random_mask
    model = masked_conv_net(image_size=24)
    rewritten, report = api.rewrite(model, HOST, sparse_inputs=["mask:all"])
    assert report.status == "ok", report.render()
    rng = np.random.default_rng(9)
    for seed in (1, 2):
        feeds = {"image": rng.uniform(-1, 1, (1, 8, 24, 24)).astype(np.float32),
                 "mask": random_mask(24, density * 10 * seed, seed=seed)}
        np.testing.assert_allclose(run(rewritten, feeds)["out"], run(model, feeds)["out"],
                                   rtol=1e-4, atol=1e-5)
