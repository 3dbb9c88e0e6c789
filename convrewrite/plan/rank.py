"""Convs of a rank the engine lacks, as 2-D convs: which form.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..conv import ConvSpec
from ..decline import Decline
from ..target import Target
from .limits import MAX_LOWERED_NODES


@dataclass(frozen=True)
class RankPlan:
    form: str            # lift (1-D as 2-D, H = 1) | depth_batch (3-D: depth frames on the batch
    #                      axis, one 2-D conv per depth tap) | per_frame (3-D: a 2-D conv per
    #                      output frame and depth tap, for engines that take batch 1)
    out_depth: int = 0   # 3-D: output frames
    strategy: str = ""
    # per_frame over a static batch larger than the engine takes: the batch ranges (each at most
    # max_batch) lowered one by one, so that no op inside reads a larger batch; () for all at once
    batch_chunks: tuple[tuple[int, int], ...] = ()


def plan_rank_lowering(spec: ConvSpec, target: Target, pads: tuple[int, ...]) -> RankPlan | Decline:
    """A conv of a rank the engine lacks, as 2-D convs: a 1-D conv is a 2-D conv over a map one
    row high; a 3-D conv is, per depth tap, a 2-D conv over depth frames, summed."""
    ranks = target.conv.spatial_ranks
    if 2 not in ranks:
        return Decline(f"the engine runs no 2-D convs to lower {spec.rank}-D convs to")
    if spec.rank == 1:
        return RankPlan("lift", strategy="1-D conv as a 2-D conv over a 1-row map")
    if spec.rank != 3:
        return Decline(f"no lowering from {spec.rank}-D to 2-D")
    if spec.transposed:
        return Decline("3-D ConvTranspose is not lowered to 2-D")
    if spec.input_shape is None or any(d is None for d in spec.input_shape[2:]):
        return Decline("a 3-D conv needs static depth, height and width to become 2-D convs")
    depth, kd, sd, dd = spec.input_shape[2], spec.kernel_shape[0], spec.strides[0], \
        spec.dilations[0]
    out_depth = (depth + pads[0] + pads[3] - (kd - 1) * dd - 1) // sd + 1
    batch = spec.input_shape[0]
    limit = target.conv.max_batch
    batch_ok = limit is None or (batch is not None and batch * out_depth <= limit)
    if batch_ok and target.allows_op("Slice") and target.allows_op("Transpose"):
        return RankPlan("depth_batch", out_depth,
                        f"3-D conv as {kd} 2-D convs over {out_depth} depth frames on the batch "
                        f"axis, summed")
    chunks = tuple((a, min(a + limit, batch)) for a in range(0, batch, limit)) \
        if limit is not None and isinstance(batch, int) and batch > limit else ()
    nodes = out_depth * kd * max(1, len(chunks))
    if nodes > MAX_LOWERED_NODES:
        return Decline(f"{nodes} per-frame 2-D convs would exceed {MAX_LOWERED_NODES} nodes")
    why = "Slice or Transpose is not in the target's ops" if batch_ok else \
        f"the engine's batch limit {limit} rules out frames on the batch axis"
    per_chunk = f", per batch chunk of at most {limit} ({len(chunks)} chunks)" if chunks else ""
    return RankPlan("per_frame", out_depth,
                    f"3-D conv as 2-D convs per output frame and depth tap{per_chunk} ({nodes} "
                    f"convs; {why})", chunks)
