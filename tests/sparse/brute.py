"""Slow, obviously-right references for the sparse tests: the rulebook by Python loops over sites
and taps (a dict of coordinates), and a dense numpy convolution by loops over taps."""

from __future__ import annotations

import itertools

import numpy as np

from convrewrite.sparse import SparseConvAttrs


def brute_rulebook(coords: np.ndarray, attrs: SparseConvAttrs):
    """(output sites in our order, {tap: set of (input row, output row)})."""
    rows = {tuple(c): i for i, c in enumerate(coords.tolist())}
    taps = list(itertools.product(*[range(k) for k in attrs.kernel_shape]))
    p, s, d = attrs.pads_begin, attrs.strides, attrs.dilations
    out_shape = attrs.out_spatial_shape
    if attrs.submanifold:
        sites = [tuple(c) for c in coords.tolist()]
    else:
        reached = set()
        for c in rows:
            for tap in taps:
                num = [c[1 + i] + p[i] - tap[i] * d[i] for i in range(attrs.rank)]
                if all(n % s[i] == 0 and 0 <= n // s[i] < out_shape[i] for i, n in enumerate(num)):
                    reached.add((c[0], *[n // s[i] for i, n in enumerate(num)]))
        sites = sorted(reached)
    out_rows = {site: j for j, site in enumerate(sites)}
    pairs = {}
    for t, tap in enumerate(taps):
        found = set()
        for site, j in out_rows.items():
            src = (site[0], *[site[1 + i] * s[i] - p[i] + tap[i] * d[i] for i in range(attrs.rank)])
            if src in rows:
                found.add((rows[src], j))
        pairs[t] = found
    return sites, pairs


def dense_conv(features, coords, weight, bias, attrs: SparseConvAttrs):
    """(out features, out coords) by a dense numpy conv over the whole grid, sampled at the
    brute-force output sites."""
    sites, _ = brute_rulebook(coords, attrs)
    batches = int(coords[:, 0].max()) + 1 if len(coords) else 1
    grid = np.zeros((batches, *attrs.spatial_shape, features.shape[1]), np.float64)
    grid[tuple(coords.T)] = features
    r = attrs.rank
    pads = [(0, 0)] + [(attrs.pads[i], attrs.pads[r + i]) for i in range(r)] + [(0, 0)]
    padded = np.pad(grid, pads)
    out_shape = attrs.out_spatial_shape
    out = np.zeros((batches, *out_shape, weight.shape[0]), np.float64)
    for tap in itertools.product(*[range(k) for k in attrs.kernel_shape]):
        window = tuple([slice(None)] + [
            slice(tap[i] * attrs.dilations[i],
                  tap[i] * attrs.dilations[i] + (out_shape[i] - 1) * attrs.strides[i] + 1,
                  attrs.strides[i]) for i in range(r)])
        out += padded[window] @ weight[(slice(None), slice(None), *tap)].T.astype(np.float64)
    if bias is not None:
        out += bias
    sites_arr = np.asarray(sites, dtype=np.int64).reshape(-1, 1 + r)
    return out[tuple(sites_arr.T)], sites_arr
