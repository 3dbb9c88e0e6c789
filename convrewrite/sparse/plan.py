"""Which convs of a sparse region run sparse: the cheaper of the sparse conv and the dense conv,
by the measured costs of ``plan.cost``, on the active fraction expected at that layer.

Where the input's sites are known -- a constant mask, or a real value of the input given to the
rewrite (``--inputs``, api ``inputs=``) -- each conv's active sites are computed from them,
exactly, and the plan is for inputs like that one. Else the sites arrive at run time and the
fraction is an estimate: the named input's expected active fraction (``--sparse-input
NAME:FRACTION``, else ``DEFAULT_FRACTION``), carried through the convs. A submanifold conv
keeps its sites; a regular conv's output site is active when any input site lies in its
window, so with the input's sites spread at random (fraction f of the root grid) an output is
active with probability 1 - (1 - f)^R, R the sites of the root grid in its receptive field
(kernel x dilation x the spacing of the input's sites, grown layer by layer). Random spread is
the worst case for a given count: clustered sites (a LiDAR scan, masked patches) dilate only at
the rim of each cluster, so the estimate errs towards the dense conv, never towards a sparse
conv slower than dense.

The first conv that runs sparse also pays for entering and leaving the region (finding the
sites, gathering them, densifying the result). Where the dense conv wins, the region densifies
before it (once) and what reads that conv runs dense. The choice is per conv, in graph order: a
first conv slightly cheaper dense ends the region even where the convs after it would have won
more sparse than it lost (3-D 2% clustered: 1.04x the dense time planned, 0.92x all sparse).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from math import prod

import numpy as np

from ..ops.sparse_conv import SparseConvAttrs
from ..plan.cost import (DENSE_CONV_SECONDS_PER_MAC, SPARSE_SECONDS_PER_DENSE_ELEMENT,
                         SPARSE_SECONDS_PER_MAC, SPARSE_SECONDS_PER_ROW_TAP)
from .index_grid import NS_PER_GRID_ENTRY

DEFAULT_FRACTION = 0.02     # the input's expected active fraction when none is declared
ALWAYS = "all"              # ``NAME:all``: every conv that can run sparse does (no cost choice)


class BadSpec(ValueError):
    """A ``--sparse-input`` spelling that names no fraction."""


def parse_spec(text: str, names) -> tuple[str, float | None]:
    """``NAME``, ``NAME:FRACTION`` (0 < FRACTION <= 1) or ``NAME:all`` -> (name, fraction, None
    for all). A text that is itself a tensor name (``names``) is that name."""
    if text in names or ":" not in text:
        return text, DEFAULT_FRACTION
    name, suffix = text.rsplit(":", 1)
    if suffix == ALWAYS:
        return name, None
    try:
        fraction = float(suffix)
    except ValueError:
        return text, DEFAULT_FRACTION       # a name with a colon, not a fraction
    if not 0 < fraction <= 1:
        raise BadSpec(f"--sparse-input {text!r}: the active fraction must be in (0, 1], "
                      f"is {fraction:g}")
    return name, fraction


@dataclass(frozen=True)
class Activity:
    """The active fraction expected of a set of sites, and what it is derived from: the root's
    fraction and, per grid dim, the root sites in one site's receptive field and the spacing of
    these sites in root sites -- or, where the input's sites are known (a constant mask, a value
    given with ``--inputs``), the sites themselves ([B, *grid] bool), carried exactly."""

    root: float
    field: tuple[int, ...]
    spacing: tuple[int, ...]
    sites: np.ndarray | None = dataclass_field(default=None, compare=False)

    @classmethod
    def of_root(cls, fraction: float, rank: int) -> "Activity":
        return cls(fraction, (1,) * rank, (1,) * rank)

    @classmethod
    def of_sites(cls, sites: np.ndarray) -> "Activity":
        rank = sites.ndim - 1
        return cls(float(sites.mean()), (1,) * rank, (1,) * rank, sites)

    @property
    def known(self) -> bool:
        return self.sites is not None

    @property
    def fraction(self) -> float:
        if self.sites is not None:
            return float(self.sites.mean())
        return 1 - (1 - self.root) ** prod(self.field)

    def after(self, attrs: SparseConvAttrs) -> "Activity":
        if attrs.submanifold:
            return self
        field = tuple(r + (k - 1) * d * j for r, k, d, j in zip(
            self.field, attrs.kernel_shape, attrs.dilations, self.spacing))
        spacing = tuple(j * s for j, s in zip(self.spacing, attrs.strides))
        sites = None if self.sites is None else regular_output_sites(self.sites, attrs)
        return Activity(self.root, field, spacing, sites)


def regular_output_sites(sites: np.ndarray, attrs: SparseConvAttrs) -> np.ndarray:
    """[B, *out grid] bool: the outputs of a regular conv whose window holds an active site."""
    out_shape = attrs.out_spatial_shape
    widths = [(0, 0)] + [(p, max(0, (o - 1) * s + (k - 1) * d + 1 - p - n)) for p, o, s, k, d, n in
                         zip(attrs.pads_begin, out_shape, attrs.strides, attrs.kernel_shape,
                             attrs.dilations, sites.shape[1:])]
    padded = np.pad(sites, widths)
    out = np.zeros((sites.shape[0], *out_shape), bool)
    for tap in attrs.taps():
        out |= padded[(slice(None), *(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in
                                      zip(tap, attrs.dilations, out_shape, attrs.strides)))]
    return out


@dataclass
class Choice:
    sparse: bool
    why: str


def choose(attrs: SparseConvAttrs, cin: int, cout: int, dense_macs: int, before: Activity,
           entering: bool) -> Choice:
    """Sparse or dense for one conv reading sites of activity ``before``; ``entering``: no conv
    of the region runs sparse yet (this one would pay for the region's entry and exit)."""
    after = before.after(attrs)
    outputs = after.fraction * prod(attrs.out_spatial_shape)
    taps = attrs.kernel_volume
    volume = prod(attrs.spatial_shape)
    sparse = outputs * taps * (SPARSE_SECONDS_PER_ROW_TAP + cin * cout * SPARSE_SECONDS_PER_MAC) \
        + volume * NS_PER_GRID_ENTRY * 1e-9
    if entering:
        sparse += (volume * cin + prod(attrs.out_spatial_shape) * cout) * \
            SPARSE_SECONDS_PER_DENSE_ELEMENT
    dense = dense_macs * DENSE_CONV_SECONDS_PER_MAC.get(attrs.rank, DENSE_CONV_SECONDS_PER_MAC[2])
    source = "known" if before.known else "est."
    why = (f"{source} {before.fraction:.1%} of its input sites and {after.fraction:.1%} of its "
           f"outputs active: sparse est. {sparse * 1e3:.3g} ms"
           f"{' (with entering the region)' if entering else ''} vs dense {dense * 1e3:.3g} ms")
    return Choice(sparse < dense, why)
