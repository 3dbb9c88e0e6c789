"""Batches larger than the engine takes (Ethos-U and the generic preset run batch 1, NVDLA 32):
the batch axis is cut into chunks of at most ``max_batch`` items, as equal as possible. Batch
items never interact in a conv, so each chunk's conv computes exactly its rows of the output."""

from __future__ import annotations

from dataclasses import dataclass

from ..conv import ConvSpec
from ..decline import Decline
from ..target import Target
from .channels import ranges_of_sizes


@dataclass(frozen=True)
class BatchPlan:
    batch: int                                  # the conv's batch
    chunks: tuple[tuple[int, int], ...]         # [start, stop) of each chunk on axis 0


def plan_batch_split(spec: ConvSpec, target: Target) -> BatchPlan | Decline:
    """The fewest chunks that each fit ``max_batch``, their sizes differing by at most one (the
    engine then runs the same conv shape, or two, rather than a full one and a remainder)."""
    limit = target.conv.max_batch
    if limit is None:
        return Decline("the target does not limit the batch")
    if spec.input_shape is None or spec.input_shape[0] is None:
        return Decline("the batch is symbolic (known only at run time) and a split needs its "
                       "size; export the model with a fixed batch")
    batch = spec.input_shape[0]
    if batch <= limit:
        return Decline(f"batch {batch} is already within the target's {limit}")
    return BatchPlan(batch, even_chunks(batch, limit))


def even_chunks(extent: int, limit: int) -> tuple[tuple[int, int], ...]:
    """[start, stop) of the fewest chunks of at most ``limit`` covering ``extent``, their sizes
    differing by at most one."""
    count = -(-extent // limit)
    sizes = [extent // count + (1 if i < extent % count else 0) for i in range(count)]
    return tuple(ranges_of_sizes(sizes))
