"""The cost choice of sparse regions (``sparse.plan``): which convs run sparse, where the region
densifies instead, what the record says, and how ``--sparse-input NAME[:FRACTION|:all]`` reads."""

from __future__ import annotations

import numpy as np
import pytest

from convrewrite import api
from convrewrite.errors import BadInputError
from convrewrite.ops.sparse_conv import SparseConvAttrs
from convrewrite.sparse.plan import DEFAULT_FRACTION, Activity, parse_spec
from convrewrite.verify import run
from tests.sparse.cases import HOST
from tests.sparse.test_regions import _conv, _net, _sparse_x


def test_parse_spec():
    names = {"x", "onnx::Mul_5", "odd:0.5"}
    assert parse_spec("x", names) == ("x", DEFAULT_FRACTION)
    assert parse_spec("x:0.1", names) == ("x", 0.1)
    assert parse_spec("x:all", names) == ("x", None)
    assert parse_spec("onnx::Mul_5", names) == ("onnx::Mul_5", DEFAULT_FRACTION)
    assert parse_spec("onnx::Mul_5:0.3", names) == ("onnx::Mul_5", 0.3)
    assert parse_spec("odd:0.5", names) == ("odd:0.5", DEFAULT_FRACTION)    # a name first
    with pytest.raises(ValueError, match="must be in \\(0, 1\\], is 2"):
        parse_spec("x:2", names)


def test_regular_convs_dilate_random_sites_by_their_receptive_field():
    three = SparseConvAttrs.create([3, 3], (128, 128), [1, 1], [1] * 4)
    root = Activity.of_root(0.02, 2)
    once, twice = root.after(three), root.after(three).after(three)
    assert once.field == (3, 3) and twice.field == (5, 5)       # 5x5, not 9 x 9 independent taps
    assert once.fraction == pytest.approx(1 - 0.98 ** 9) and twice.fraction == pytest.approx(
        1 - 0.98 ** 25)
    down = SparseConvAttrs.create([2, 2], (128, 128), [2, 2], [0] * 4)
    coarse = root.after(down).after(three)                      # 3x3 on the stride-2 grid
    assert coarse.spacing == (2, 2) and coarse.field == (6, 6)
    same = SparseConvAttrs.create([3, 3], (128, 128), [1, 1], None, None, True)
    assert root.after(same) == root


def _three_layers():
    c0, i0 = _conv("conv0", "x", "c0", 32, 64)
    c1, i1 = _conv("conv1", "c0", "c1", 64, 64)
    c2, i2 = _conv("conv2", "c1", "y", 64, 64)
    return _net([c0, c1, c2], spatial=(24, 24), cin=32, inits=i0 + i1 + i2)


def _region(report):
    return [r for r in report.records if r.pass_name == "dense_to_sparse"]


def test_densifies_before_the_conv_where_dense_is_cheaper():
    """At 1% random sites three regular 3x3 convs see ~9%, ~22% and ~39% of their outputs
    active: the first two run sparse, the region densifies before the third, which runs dense."""
    model = _three_layers()
    rewritten, report = api.rewrite(model, HOST, sparse_inputs=["x:0.01"])     # seeded inputs
    assert report.status == "ok", report.render()
    (region,) = _region(report)
    assert "2 SparseConvs [conv0 (regular 3x3 pads [1, 1, 1, 1]), conv1 (regular 3x3 pads" \
        in region.rewrite
    assert "densified at c1" in region.rewrite
    assert any(n.startswith("conv2: left dense although it reads sparse 'x' (the dense conv is "
                            "cheaper: est. 22.2% of its input sites and 38.9% of its outputs")
               for n in report.recognised), report.recognised
    assert any(n.startswith("conv0 sparse: est. 1.0% of its input sites and 8.6% of its outputs "
                            "active") and "(with entering the region)" in n for n in region.notes)
    assert "planned for 1.0% of the input's sites active" in " ".join(region.notes)
    assert [n.name for n in rewritten.graph.node if n.op_type == "Conv"] == ["conv2"]
    other = {"x": _sparse_x((1, 32, 24, 24), 0.3, 7)}
    np.testing.assert_allclose(run(rewritten, other)["y"], run(model, other)["y"], rtol=1e-4,
                               atol=1e-4)


def test_no_region_where_the_first_conv_is_cheaper_dense():
    """At the default 2% (none declared), 3 -> 8 channels: the sparse conv's per-site index work
    and the region's entry and exit cost more than the whole dense conv: nothing is rewritten."""
    c0, i0 = _conv("conv0", "x", "y", 3, 8)
    model = _net([c0], inits=i0)
    rewritten, report = api.rewrite(model, HOST, sparse_inputs=["x"])
    assert not _region(report) and rewritten is model
    assert any(n.startswith("conv0: left dense although it reads sparse 'x' (the dense conv is "
                            "cheaper: est. 2.0%") for n in report.recognised), report.recognised
    _, forced = api.rewrite(model, HOST, sparse_inputs=["x:all"])
    assert _region(forced)


def test_bad_fraction_is_a_bad_input():
    c0, i0 = _conv("conv0", "x", "y", 3, 8)
    with pytest.raises(BadInputError, match="'x:0': the active fraction must be in"):
        api.rewrite(_net([c0], inits=i0), HOST, sparse_inputs=["x:0"])


def test_a_constant_mask_is_planned_at_its_own_fraction():
    from convrewrite.models.sparse_nets import random_mask
    from tests.passes.test_dense_to_sparse import _constant_mask_model
    mask = random_mask(10, 0.2, seed=4)
    _, report = api.rewrite(_constant_mask_model(mask), HOST, sparse_inputs=["mask"])
    share = np.count_nonzero(mask) / mask.size
    said = " ".join(report.recognised + [n for r in _region(report) for n in r.notes])
    assert f"known {share:.1%} of its input sites and {share:.1%} of its outputs active" in said


@pytest.mark.parametrize("kernel, stride, pads", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 2, 0)])
def test_known_sites_after_a_regular_conv_are_the_rulebooks(kernel, stride, pads):
    from convrewrite.sparse.plan import regular_output_sites
    from convrewrite.sparse.rulebook import build_rulebook
    rng = np.random.default_rng(kernel + stride + pads)
    active = rng.random((2, 11, 9)) < 0.05
    attrs = SparseConvAttrs.create([kernel] * 2, (11, 9), [stride] * 2, [pads] * 4)
    out = regular_output_sites(active, attrs)
    rb = build_rulebook(np.argwhere(active).astype(np.int64), attrs)
    assert out.shape == (2, *attrs.out_spatial_shape)
    np.testing.assert_array_equal(np.argwhere(out), rb.out_coords)


def test_the_plan_follows_the_sites_of_the_input_given():
    """The same three convs on an input given to the rewrite: one clustered patch (1% of the
    sites, dilating only at its rim) keeps all three sparse, each choice by the known sites; the
    seeded default (2%, spread at random) densifies before the second."""
    model = _three_layers()
    x = np.zeros((1, 32, 24, 24), np.float32)
    x[:, :, 3:5, 3:6] = np.random.default_rng(2).uniform(-1, 1, (1, 32, 2, 3))
    _, report = api.rewrite(model, HOST, sparse_inputs=["x"], inputs={"x": x})
    assert report.status == "ok", report.render()
    (region,) = _region(report)
    assert "3 SparseConvs" in region.rewrite and "densified at y" in region.rewrite
    assert any(n.startswith("conv2 sparse: known 7.3% of its input sites and 12.5% of its "
                            "outputs active") for n in region.notes), region.notes
    assert "at the sites of the input given" in " ".join(region.notes)
    _, seeded = api.rewrite(model, HOST, sparse_inputs=["x"], verify=False)
    (region,) = _region(seeded)
    assert "1 SparseConvs [conv0" in region.rewrite and "densified at c0" in region.rewrite
