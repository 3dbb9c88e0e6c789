"""One-SparseConv models and seeded random sparse inputs for the sparse tests."""

from __future__ import annotations

import numpy as np

from convrewrite.models.sparse_nets import sparse_conv_model as sparse_model  # noqa: F401

# every op allowed (the shipped presets list NPU ops, which have no gather or scatter)
HOST = {"name": "host", "conv": {"max_in_channels": 4096}}


def random_sparse(seed: int, batches: int, grid, count: int, channels: int, dtype=np.int32):
    rng = np.random.default_rng(seed)
    flat = rng.choice(batches * int(np.prod(grid)), count, replace=False)
    coords = np.stack(np.unravel_index(flat, (batches, *grid)), 1).astype(dtype)
    return rng, coords, rng.uniform(-1, 1, (count, channels)).astype(np.float32)
