"""Seeded verification inputs that make sense for sparse models.

``verify.make_inputs`` draws integers in [0, 10] and floats in [-1, 1]; for SparseConv coordinates
that means repeated and out-of-grid sites, and a ``--sparse-input`` tensor would be dense. Here:
coordinates fed to a SparseConv are distinct sites of its grid (two batch items where the grid
allows, clustered in a corner box of about four times their number so that kernels find
neighbours), the features get as many rows, and named sparse graph inputs keep about 10% of their
sites (masks become 0/1)."""

from __future__ import annotations

from math import ceil, prod

import numpy as np
import onnx

from ..ops import DOMAIN
from ..ops.sparse_conv import INVERSE_OP_TYPE, OP_TYPE, SparseConvAttrs, SparseConvError
from .plan import BadSpec, parse_spec

DEFAULT_SITES = 64
ACTIVE_FRACTION = 0.1


def _dynamic_rows(info: onnx.ValueInfoProto) -> bool:
    dims = info.type.tensor_type.shape.dim
    return not dims or not dims[0].HasField("dim_value") or dims[0].dim_value <= 0


def random_sites(rng: np.random.Generator, count: int, spatial_shape, batches: int = 2,
                 dtype=np.int64) -> np.ndarray:
    """``count`` distinct [batch, *spatial] rows, clustered in a corner box of each batch item."""
    rank = len(spatial_shape)
    batches = max(1, min(batches, count))
    per = ceil(count / batches)
    side = max(1, ceil((4 * per) ** (1 / rank)))
    box = [min(s, side) for s in spatial_shape]
    while prod(box) * batches < count:
        grown = [min(s, b * 2) for s, b in zip(spatial_shape, box)]
        if grown == box:
            raise SparseConvError(f"cannot place {count} distinct sites in {batches} x "
                                  f"{list(spatial_shape)}")
        box = grown
    flat = rng.choice(batches * prod(box), size=count, replace=False)
    return np.stack(np.unravel_index(flat, (batches, *box)), axis=1).astype(dtype)


def _draw(out: dict, inputs: dict, constants: dict, coords: str, grid, features: str | None,
          fixed, done: set, rng) -> None:
    """Redraw one coordinates input as distinct sites of ``grid`` (and its features' rows)."""
    if coords in constants and features in out and features not in fixed \
            and _dynamic_rows(inputs[features]) and out[features].ndim == 2:
        rows = constants[coords].dims[0]        # features for the constant sites
        out[features] = rng.uniform(-1, 1, (rows, out[features].shape[1])).astype(
            out[features].dtype)
    if coords not in inputs or coords in done or coords not in out:
        return
    rows = out[coords].shape[0]
    if _dynamic_rows(inputs[coords]) and coords not in fixed:
        rows = min(DEFAULT_SITES, 2 * prod(grid))
    out[coords] = random_sites(rng, rows, grid, dtype=out[coords].dtype)
    if features in inputs and features in out and out[features].ndim == 2:
        out[features] = rng.uniform(-1, 1, (rows, out[features].shape[1])).astype(
            out[features].dtype)
    done.add(coords)


def sparse_feeds(model: onnx.ModelProto, feeds: dict[str, np.ndarray], seed: int = 0,
                 sparse_inputs=(), fixed=()) -> dict[str, np.ndarray]:
    """``feeds`` with SparseConv coordinates (and their features) and the named sparse inputs
    redrawn as above (features as many rows as constant coordinates have); inputs in ``fixed``
    (given shapes) keep their row counts."""
    rng = np.random.default_rng([seed, 0x5ba75e])
    inputs = {i.name: i for i in model.graph.input}
    constants = {t.name: t for t in model.graph.initializer}
    out = dict(feeds)
    done: set[str] = set()
    for node in model.graph.node:
        if node.domain != DOMAIN or node.op_type not in (OP_TYPE, INVERSE_OP_TYPE) \
                or len(node.input) < 2:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        try:
            parsed = SparseConvAttrs.from_node_attrs(attrs, node.op_type)
        except SparseConvError:
            continue                        # the rewrite will say what is wrong
        features = node.input[0]
        sites = [(node.input[1], parsed.spatial_shape, features)]
        if node.op_type == INVERSE_OP_TYPE:     # coarse input sites, fine output sites
            sites = [(node.input[1], parsed.out_spatial_shape, features)]
            if len(node.input) > 2:
                sites.append((node.input[2], parsed.spatial_shape, None))
        for coords, grid, feats in sites:
            _draw(out, inputs, constants, coords, grid, feats, fixed, done, rng)
    for text in sparse_inputs:
        try:
            name = parse_spec(text, out)[0]
        except BadSpec:
            continue                        # the rewrite says what is wrong
        x = out.get(name)
        if x is None or x.ndim < 3 or not np.issubdtype(x.dtype, np.floating):
            continue
        keep = rng.random((x.shape[0], 1, *x.shape[2:])) < ACTIVE_FRACTION
        out[name] = keep.astype(x.dtype) if x.shape[1] == 1 else (x * keep).astype(x.dtype)
    return out
