"""Batch split: a conv over more batch items than the engine takes becomes one conv per chunk of
the batch (``plan.batch``), the input cut on axis 0 (one Split, or a Slice per chunk where the
target has no Split) and the chunk outputs joined by Concat on axis 0. Every chunk conv reads the
same weight and bias tensors (no copies), and each computes exactly its rows: exact. An integer
conv (QLinearConv, ConvInteger) stays one per chunk, with its quantization parameters."""

from __future__ import annotations

from dataclasses import dataclass

from ..build.builder import Builder, ConvSite
from ..conv import ConvSpec
from ..decline import Decline
from ..plan.batch import BatchPlan, plan_batch_split
from ..rules import rules_named
from ..target import Target
from .channel_split import use_split
from .contract import Lowering, Planned, missing_ops, register


@dataclass(frozen=True)
class BatchEmit:
    plan: BatchPlan
    use_split: bool                 # cut the input with one Split (else a Slice per chunk)


@register
class BatchSplit(Lowering):
    name = "batch"
    fixes = rules_named("max_batch")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        plan = plan_batch_split(spec, target)
        if isinstance(plan, Decline):
            return plan
        split = use_split(target)
        missing = missing_ops(target, ["Concat", "Split" if split else "Slice"])
        if missing:
            return missing
        sizes = sorted({b - a for a, b in plan.chunks})
        how = (f"batch {plan.batch} as {len(plan.chunks)} chunks of "
               f"{' or '.join(map(str, sizes))} (target takes {target.conv.max_batch}), "
               f"{'Split' if split else 'Slice'} + Concat on axis 0")
        return Planned(BatchEmit(plan, split), how, "exact")

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        emit, base = planned.detail, site.name
        chunks = emit.plan.chunks
        parts = b.split_axis(site.x, 0, list(chunks), f"{base}/batch_split", emit.use_split,
                             f"{base}/batch_slice")
        w = b.weight(site.weight, (slice(None),), f"{base}/batch")
        y_shape = b.shape(site.y) if site.y is not None else None
        outputs = []
        for i, ((start, stop), part) in enumerate(zip(chunks, parts)):
            inputs = site.operands(part, w)
            shape = None
            if y_shape is not None:
                shape = [stop - start, *y_shape[1:]]
            outputs.append(b.conv(site, inputs, b.fresh(f"{base}/batch{i}"), dict(site.attrs),
                                  shape=shape))
        return b.concat(outputs, 0, f"{base}/batch_concat", out=site.y)
