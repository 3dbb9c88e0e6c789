"""Writes tests/sparse/spconv_net_fixture.npz: small spconv 2.3.8 networks read by our converter's
first stage (``describe``, which needs torch), their seeded inputs and spconv's own forward outputs.
test_spconv_import.py converts the layers (the second stage, no torch) and compares our lowered
model on onnxruntime with spconv's outputs, keyed by coordinate. Run with spconv's python, one
thread (scripts/spconv_venv.sh makes that environment):

    OMP_NUM_THREADS=1 PYTHONPATH=. /tmp/spconv-venv/bin/python tests/sparse/make_spconv_net_fixture.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# name: (grid, batches, sites, in channels)
NETS = {"unet3d": ((12, 11, 10), 2, 150, 4), "down_up2d": ((16, 14), 1, 60, 3)}


def build(name: str):
    """The network; every conv with spconv's Native algorithm (its CPU path takes a bias only
    there)."""
    import functools

    import spconv.pytorch as sp
    from spconv.core import ConvAlgo
    from torch import nn
    native = {k: functools.partial(getattr(sp, k), algo=ConvAlgo.Native) for k in (
        "SubMConv3d", "SparseConv3d", "SparseInverseConv3d", "SubMConv2d", "SparseConv2d",
        "SparseInverseConv2d")}
    sp = type("Native", (), {**native, "SparseSequential": sp.SparseSequential})
    if name == "unet3d":      # SubM, strided, nested SubM reusing a key, inverse, BN, ReLU
        return sp.SparseSequential(
            sp.SubMConv3d(4, 8, 3, indice_key="subm0", bias=False), nn.BatchNorm1d(8), nn.ReLU(),
            sp.SparseConv3d(8, 16, 3, 2, padding=1, indice_key="down0", bias=False),
            nn.BatchNorm1d(16), nn.ReLU(),
            sp.SparseSequential(sp.SubMConv3d(16, 16, 3, indice_key="subm1", bias=False),
                                nn.BatchNorm1d(16), nn.LeakyReLU(0.1),
                                sp.SubMConv3d(16, 16, 3, indice_key="subm1")),
            sp.SparseInverseConv3d(16, 8, 3, indice_key="down0", bias=False), nn.BatchNorm1d(8),
            nn.ReLU(), sp.SubMConv3d(8, 5, 3, indice_key="subm0"))
    return sp.SparseSequential(         # 2-D, 2x2 stride-2 down and its inverse, dilated SubM
        sp.SubMConv2d(3, 6, 3, dilation=2, indice_key="a"), nn.ReLU(),
        sp.SparseConv2d(6, 12, 2, 2, indice_key="down"), nn.ReLU(),
        sp.SparseInverseConv2d(12, 6, 2, indice_key="down"), nn.BatchNorm1d(6), nn.ReLU(),
        sp.SubMConv2d(6, 2, 1))


def main() -> None:
    import spconv
    import torch
    from convrewrite.sparse.spconv_import import describe, save_layers, spconv_forward
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = Path(__file__).with_name("spconv_net_fixture")
    out.mkdir(exist_ok=True)
    for seed, (name, (grid, batches, n, cin)) in enumerate(NETS.items()):
        rng = np.random.default_rng(seed)
        net = build(name)
        with torch.no_grad():       # BatchNorm statistics as a trained net has them
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.copy_(torch.from_numpy(rng.uniform(-0.2, 0.2, m.num_features)))
                    m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features)))
                    m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features)))
                    m.bias.copy_(torch.from_numpy(rng.uniform(-0.2, 0.2, m.num_features)))
        for m in net.modules():     # spconv's CPU convs add their bias in training mode only
            if isinstance(m, torch.nn.BatchNorm1d):
                m.eval()
        flat = rng.choice(batches * int(np.prod(grid)), n, replace=False)
        coords = np.stack(np.unravel_index(flat, (batches, *grid)), 1).astype(np.int32)
        features = rng.uniform(-1, 1, (n, cin)).astype(np.float32)
        y, indices = spconv_forward(net, features, coords, grid, batches)
        save_layers(describe(net), out / f"{name}.npz", coords=coords, features=features,
                    grid=np.asarray(grid), out_features=y, out_coordinates=indices,
                    spconv_version=np.array(spconv.__version__))


if __name__ == "__main__":
    main()
