"""Our CPU conv kernel (implicit GEMM over packed weights) against onnxruntime, over the shapes
that stress its tiling: ragged channel blocks, prime pixel counts, strides, dilations, asymmetric
padding, batches; and the tile choice itself."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from convrewrite.tvm.kernels.conv_gemm import (  # noqa: E402
    ConvGeometry, REGISTERS, choose_tile, conv_prim_func,
                                               pack_weight, schedule_conv)  # noqa: E402
from convrewrite.tvm.machines import cpu_target  # noqa: E402
from tests.conv_cases import conv_model, run  # noqa: E402

GEOMETRIES = [
    # batch, cin, h, w, cout, kernel, strides, dilations, pads (top, left, bottom, right)
    (1, 16, 8, 8, 32, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (1, 8, 7, 5, 10, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),       # ragged Cout, 35 pixels
    (2, 12, 9, 9, 48, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),      # batch 2, stride 2
    (1, 16, 11, 13, 16, (3, 3), (1, 1), (2, 2), (2, 0, 1, 3)),    # dilation, asymmetric pads
    (1, 32, 6, 6, 64, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),      # pointwise
    (1, 3, 16, 16, 16, (7, 7), (2, 2), (1, 1), (3, 3, 3, 3)),     # a ResNet stem
    (1, 24, 5, 9, 20, (1, 3), (1, 2), (1, 1), (0, 1, 0, 1)),      # 1x3, unequal strides
]


def _run_kernel(geom: ConvGeometry, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    from tvm.s_tir import Schedule
    tile = choose_tile(geom)
    sch = Schedule(conv_prim_func(geom, tile))
    schedule_conv(sch)
    lib = tvm.compile(sch.mod, target=cpu_target())
    dev = tvm.cpu()
    y = tvm.runtime.tensor(np.zeros((geom.batch, geom.out_channels, *geom.out_size), "float32"),
                           dev)
    lib["main"](tvm.runtime.tensor(x, dev), tvm.runtime.tensor(pack_weight(w, tile), dev), y)
    return y.numpy()


@pytest.mark.parametrize("case", GEOMETRIES, ids=lambda c: "x".join(map(str, c[:5])))
def test_kernel_matches_onnxruntime(case):
    batch, cin, h, w_, cout, kernel, strides, dilations, pads = case
    geom = ConvGeometry(batch, cin, h, w_, cout, kernel, strides, dilations, pads)
    model = conv_model(cin=cin, cout=cout, kernel=kernel, strides=list(strides),
                       dilations=list(dilations), pads=[pads[0], pads[1], pads[2], pads[3]],
                       spatial=(h, w_), batch=batch, bias=False)
    weight = next(t for t in model.graph.initializer if t.name == "W")
    w = np.frombuffer(weight.raw_data, dtype=np.float32).reshape(tuple(weight.dims))
    x = np.random.default_rng(1).uniform(-1, 1, (batch, cin, h, w_)).astype(np.float32)
    ref = run(model, {"x": x})[0]
    got = _run_kernel(geom, np.maximum(x, 0), w)       # the model has a Relu before the conv
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())),
                               rtol=1e-4)


@pytest.mark.parametrize("pixels_hw,cout", [((56, 56), 64), ((7, 7), 2048), ((28, 28), 128),
                                            ((14, 14), 256), ((5, 7), 10)])
def test_tile_fits_registers_and_divides(pixels_hw, cout):
    geom = ConvGeometry(1, 64, *pixels_hw, cout, (1, 1))
    tile = choose_tile(geom)
    assert tile.mr * tile.nv + tile.nv + 1 <= REGISTERS
    assert geom.pixels % tile.mr == 0
    width = geom.out_size[1]
    assert width % tile.mr == 0 or tile.mr % width == 0
    if cout % 16 == 0:
        assert cout % tile.vb == 0


def test_pack_weight_layout():
    w = np.arange(20 * 3 * 2 * 2, dtype=np.float32).reshape(20, 3, 2, 2)
    tile = choose_tile(ConvGeometry(1, 3, 4, 4, 20, (2, 2)))
    packed = pack_weight(w, tile)
    blocks = -(-20 // tile.vb)
    assert packed.shape == (blocks, 3, 2, 2, tile.vb)
    for co in range(20):
        np.testing.assert_array_equal(packed[co // tile.vb, :, :, :, co % tile.vb], w[co])
    assert not packed[-1, ..., 20 - (blocks - 1) * tile.vb:].any()     # zeros past Cout
