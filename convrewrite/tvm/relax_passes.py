"""The rewrite passes as Relax module passes, emitted from the same planners as the ONNX passes.

``ChannelSplit(target)`` turns each ``relax.nn.conv1d/2d/3d`` the target rejects for its channel
counts into the sub-convs ``plan.channels.plan_channel_split`` decides — the very plan the ONNX pass
(``lowerings/channel_split.py``) emits — joined the same way: the input cut into the plan's channel
ranges (one ``split``), one conv per sub-conv with its weight slice, partial sums added in the
plan's order (``plan.channels.sum_order``: chain or tree), output blocks concatenated. The Relax conv has
no bias (the ONNX frontend emits it as a separate add after the conv), so nothing else changes.

``GroupLowering(target)`` does the same for grouped / depthwise convs on an engine without them
(``plan.channels.plan_group_lowering``, the plan of ``lowerings/groups.py``), through the same emitter.
"""

from __future__ import annotations

from ..decline import Decline
from ..legality import check
from ..lowerings.channel_split import weight_index
from ..weights import block_diagonal
from ..plan.channels import ChannelSplitPlan, plan_channel_split, plan_group_lowering, sum_order
from ..target import load_target
from . import require_tvm
from .relax_conv import constant_weight, conv_like, conv_mutator_pass, conv_spec

CHANNEL_RULES = frozenset({"max_in_channels", "max_out_channels"})


def ChannelSplit(target):  # noqa: N802 - a tvm.transform pass, named like TVM's own
    """Module pass: split every conv whose channels ``target`` (a Target, preset name, YAML path
    or dict) rejects; convs the planner declines are kept as they are."""
    target = load_target(target)

    def rewrite(builder, call):
        spec = conv_spec(call)
        if isinstance(spec, Decline) or not any(v.rule in CHANNEL_RULES for v in check(spec, target)):
            return None
        plan = plan_channel_split(spec, target)
        if isinstance(plan, Decline) or any(sub.block_diagonal for sub in plan.sub_convs):
            return None
        return emit_channel_plan(builder, call, spec, plan)

    return conv_mutator_pass("convrewrite.ChannelSplit", rewrite)


def GroupLowering(target, groups_per_conv: int | None = None):  # noqa: N802 - a TVM pass
    """Module pass: each grouped or depthwise conv whose form ``target`` does not run becomes
    the chunks ``plan.channels.plan_group_lowering`` decides — the ONNX pass's (``passes/groups.py``)
    plan — each a dense conv with a block-diagonal weight (a plain conv per group when a chunk
    holds one), emitted like the channel split. Weights must be constants."""
    target = load_target(target)

    def rewrite(builder, call):
        spec = conv_spec(call)
        if isinstance(spec, Decline) or constant_weight(call) is None \
                or not any(v.rule == "groups" for v in check(spec, target)):
            return None
        plan = plan_group_lowering(spec, target, groups_per_conv)
        return None if isinstance(plan, Decline) else emit_channel_plan(builder, call, spec, plan)

    return conv_mutator_pass("convrewrite.GroupLowering", rewrite)


def emit_channel_plan(builder, call, spec, plan: ChannelSplitPlan):
    """The plan as Relax bindings; returns the expression replacing ``call``."""
    require_tvm()
    from tvm import relax
    x, weight = call.args
    values = constant_weight(call)
    ranges = plan.input_ranges
    if len(ranges) == 1:
        chunks = {ranges[0]: x}
    else:
        parts = builder.emit(relax.op.split(x, [b for _, b in ranges[:-1]], axis=1))
        chunks = {r: builder.emit(relax.TupleGetItem(parts, i)) for i, r in enumerate(ranges)}
    blocks = []
    for block in plan.blocks:
        terms = []
        for sub in block.terms:
            out_index, in_index = weight_index(spec, sub)
            if sub.block_diagonal:
                w = relax.const(block_diagonal(values[out_index], sub.groups))
            elif values is not None:
                w = relax.const(values[out_index, in_index].copy())
            else:
                w = builder.emit(relax.op.strided_slice(
                    weight, axes=[0, 1], begin=[out_index.start, in_index.start],
                    end=[out_index.stop, in_index.stop]))
            groups = 1 if sub.block_diagonal else sub.groups
            terms.append(builder.emit(conv_like(call, chunks[(sub.in_start, sub.in_stop)], w,
                                                 groups)))
        blocks.append(_sum(builder, terms, plan.accumulate))
    if len(blocks) == 1:
        return blocks[0]
    return relax.op.concat(blocks, axis=1)


def _sum(builder, terms: list, accumulate: str):
    from tvm import relax
    operands = list(terms)
    for i, j in sum_order(len(terms), accumulate):
        operands.append(builder.emit(relax.op.add(operands[i], operands[j])))
    return operands[-1]
