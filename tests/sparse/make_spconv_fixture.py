"""Writes tests/sparse/spconv_fixture.npz: spconv 2.3.8's outputs on small seeded cases, which
test_spconv_fixture.py compares ours with (keyed by coordinate). Run it with spconv's own python
(torch + spconv; not a dependency of ours), one thread:

    OMP_NUM_THREADS=1 /tmp/spconv-venv/bin/python tests/sparse/make_spconv_fixture.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# name: (grid, batches, sites, cin, cout, submanifold, kernel, stride, padding, dilation)
CASES = {
    "subm2d": ((9, 8), 2, 40, 3, 4, True, 3, 1, 0, 1),
    "subm3d_dil2": ((7, 8, 6), 1, 60, 4, 5, True, 3, 1, 0, 2),
    "reg2d_valid": ((7, 7), 1, 12, 3, 2, False, 3, 1, 0, 1),
    "reg3d_s2p1": ((9, 8, 7), 2, 70, 4, 6, False, 3, 2, 1, 1),
    "reg3d_k2s2": ((8, 8, 6), 1, 50, 3, 3, False, 2, 2, 0, 1),
    "reg2d_s1p1_dil2": ((10, 9), 1, 25, 2, 3, False, 3, 1, 1, 2),
}


def main() -> None:
    import torch
    import spconv
    import spconv.pytorch as sp
    from spconv.core import ConvAlgo
    torch.set_num_threads(1)
    out = {"spconv_version": np.array(spconv.__version__)}
    for seed, (name, (grid, batches, n, cin, cout, sub, k, s, p, d)) in enumerate(CASES.items()):
        rng = np.random.default_rng(seed)
        flat = rng.choice(batches * int(np.prod(grid)), n, replace=False)
        coords = np.stack(np.unravel_index(flat, (batches, *grid)), 1).astype(np.int32)
        features = rng.uniform(-1, 1, (n, cin)).astype(np.float32)
        weight = rng.uniform(-1, 1, (cout, *[k] * len(grid), cin)).astype(np.float32)  # spconv's
        bias = rng.uniform(-1, 1, cout).astype(np.float32)
        rank = len(grid)
        cls = {(2, True): sp.SubMConv2d, (3, True): sp.SubMConv3d, (2, False): sp.SparseConv2d,
               (3, False): sp.SparseConv3d}[rank, sub]
        kwargs = {} if sub else {"stride": s, "padding": p}
        conv = cls(cin, cout, k, dilation=d, bias=True, algo=ConvAlgo.Native, **kwargs)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(torch.from_numpy(bias))
            y = conv(sp.SparseConvTensor(torch.from_numpy(features), torch.from_numpy(coords),
                                         list(grid), batches))
        for key, value in (("coords", coords), ("features", features), ("weight", weight),
                           ("bias", bias), ("out_coords", y.indices.numpy()),
                           ("out_features", y.features.numpy())):
            out[f"{name}.{key}"] = value
    np.savez_compressed(Path(__file__).with_name("spconv_fixture.npz"), **out)


if __name__ == "__main__":
    main()
