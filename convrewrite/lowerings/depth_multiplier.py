"""A depthwise conv with channel multiplier m > 1 on an engine that runs depthwise convs only
with multiplier 1 (or, like Ethos-U55, only with one input channel): repeat each input channel m
times in place (a Gather, or a 1x1 one-hot conv where the target has no Gather: chosen in
``plan.multiplier``), then run a multiplier-1 depthwise conv over the C*m channels with the same
weight. Every output still reads one channel through the same taps, though onnxruntime's
multiplier-1 depthwise kernel may add the taps in another order than its grouped one."""

from __future__ import annotations

from math import prod

import numpy as np

from ..build.builder import Builder, ConvSite
from ..conv import ConvSpec
from ..decline import Decline
from ..plan.multiplier import plan_depth_multiplier
from ..rules import rules_named
from ..target import Target
from .contract import Lowering, Planned, missing_ops, register


@register
class DepthMultiplierLowering(Lowering):
    name = "depth_multiplier"
    fixes = rules_named("max_depth_multiplier", "depth_multiplier_needs_single_input")

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        plan = plan_depth_multiplier(spec, target)
        if isinstance(plan, Decline):
            return plan
        missing = missing_ops(target, ["Gather" if plan.form == "gather" else "Conv"])
        if missing:
            return missing
        extra = 0 if plan.form == "gather" else spec.in_channels * spec.depth_multiplier
        return Planned(plan, plan.strategy, "reassociating",
                       macs_factor=1 + extra / max(prod(spec.kernel_shape), 1))

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        spec, base = site.spec, site.name
        channels, m = spec.in_channels, spec.depth_multiplier
        source = np.repeat(np.arange(channels, dtype=np.int64), m)
        repeated = b.take_channels(site.x, source, channels, spec.rank,
                                   planned.detail.form == "gather", f"{base}/repeat",
                                   f"{base}/repeated")
        attrs = dict(site.attrs, group=channels * m)
        attrs.setdefault("kernel_shape", list(spec.kernel_shape))
        inputs = [repeated, site.weight_operand] + ([site.bias] if site.bias is not None else [])
        return b.conv(site, inputs, b.fresh(f"{base}/multiplier1"), attrs, out=site.y)
