"""Every cost constant the planners choose by, with where it was measured.

Costs are in MAC-equivalents: one multiply-accumulate of a dense conv on onnxruntime CPU (2-core
x86-64 with AVX-512, the machine kind of FACTS.md), where a dense conv runs at ~0.01 ns per MAC.
Re-measure with the benchmark named beside each constant before relying on it elsewhere.
"""

from __future__ import annotations

import math

# A sub-conv's fixed cost (launch, input pass) in kernel taps per output, by which the kernel
# split's tile chooser weighs taps computed against sub-convs made: a chosen weight, not measured.
NODE_COST_IN_TAPS = 4


# What one more conv node costs, in MACs: the per-node dispatch measured in the ResNet-50 split
# profile (benchmarks/split_overhead.py): ~10 us per sub-conv at ~100 GMAC/s on this CPU.
NODE_COST_IN_MACS = 1_000_000
COSTING_PIXELS = 32 * 32     # a map of unknown size is costed as 32x32 (and the record says so)
# A plain 4-D copy (Split, Slice, Concat, Pad, Gather) on onnxruntime CPU: ~0.12 ns per element
# written after ~2 us per node, against ~0.01 ns per dense-conv MAC (benchmarks/variants.py
# prints what these come from). 6-D layout transposes cost far more: LAYOUT_ELEMENT_COST_IN_MACS.
COPY_ELEMENT_COST_IN_MACS = 12
COPY_NODE_COST_IN_MACS = 200_000


# onnxruntime's conv is im2col + GEMM: with a GEMM depth K (input channels x taps) below ~256
# (k x k) or ~32 (1x1, no im2col) each MAC costs about that depth / K times more (measured on
# grouped-conv lowerings of 4..64 channels per group, benchmarks/variants.py).
FULL_GEMM_DEPTH_KXK = 256
FULL_GEMM_DEPTH_1X1 = 32


def shallow_gemm_penalty(depth: int, kernel: tuple[int, ...]) -> float:
    full = FULL_GEMM_DEPTH_1X1 if math.prod(kernel) == 1 else FULL_GEMM_DEPTH_KXK
    return max(1.0, full / max(depth, 1))


# What moving one element through a Reshape/Transpose costs, in MACs of a conv. Measured by
# benchmarks/geometry.py on onnxruntime CPU (2-core AVX-512): a 64->64 3x3 conv on 64x64 runs
# 151 M MACs in 0.67 ms; its space-to-batch layout ops moved 0.54 M elements in about 1.6 ms.
LAYOUT_ELEMENT_COST_IN_MACS = 680


# A one-hot depthwise 3x3 conv runs ~0.04-0.08 ns per MAC on onnxruntime CPU against ~0.01 ns for
# a dense 1x1 conv (benchmarks/variants.py): each of its MACs counts 4.
DEPTHWISE_MAC_COST = 4


def costed_pixels(spatial) -> tuple[int, bool]:
    """Pixels of a map, and whether the size was known (else COSTING_PIXELS is used)."""
    if spatial is None or any(not isinstance(d, int) for d in spatial):
        return COSTING_PIXELS, False
    return math.prod(spatial), True


# Sparse regions (``sparse.plan``): a conv runs sparse only where that is cheaper than the dense
# conv. Fitted on onnxruntime 1.32, 1 thread, thread CPU time, within 22% on 20 cases: single
# 3x3 convs 16->32 and 32->32 on 128x128, 3x3x3 4->16 and 16->16 on 64x64x32, random inputs at
# 0.5-20% of the sites, each as the region rewrites it (in-graph rulebook over the index grid,
# read by GatherElements; implicit GEMM) against the dense Conv (``benchmarks/sparse_input.py
# --calibrate`` re-measures). The dense conv: ~13 ps per MAC in 2-D, ~32 ps in 3-D
# (onnxruntime's 3-D conv is slower per MAC, whatever the channels: 32.5 ps at 4 -> 16, 31 ps at
# 16 -> 16).
DENSE_CONV_SECONDS_PER_MAC = {2: 13e-12, 3: 32e-12}
# The sparse conv, per (output site, kernel tap): the table lookup and the row gather (~11 ns,
# whatever the channels; ~20 ns with the table read by Gather), and the implicit GEMM's MACs at
# ~33 ps each (its [M, K x Cin] block gathered, not streamed: 2.5x the dense conv's rate in 2-D).
SPARSE_SECONDS_PER_ROW_TAP = 11e-9
SPARSE_SECONDS_PER_MAC = 33e-12
# Entering and leaving a region, per element of the dense input and of the densified output:
# finding the sites (|x| summed over channels, NonZero), gathering their features, the index grid
# and the densifying scatter (~0.88 ns each).
SPARSE_SECONDS_PER_DENSE_ELEMENT = 0.88e-9
# ... where the sites are a mask's (no |x| summed over the input's channels): 0.59-0.81 ns,
# measured on one submanifold 3x3 conv between Muls by the mask (16->32 and 32->32 on 128x128,
# 2-30% of the mask set), whose dense form also pays the two Muls by the mask the region absorbs:
# ~0.2 ns per element (1.20 ms dense against 1.04 ms for the conv alone).
SPARSE_SECONDS_PER_MASKED_ELEMENT = 0.65e-9
DENSE_SECONDS_PER_MASK_MUL_ELEMENT = 0.2e-9
