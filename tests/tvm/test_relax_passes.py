"""The Relax channel split against the ONNX channel split: same plan, same convs, same numbers.

For each case the ONNX pass rewrites the model (run on onnxruntime), the Relax pass rewrites the
same model imported into Relax (built and run on TVM's CPU); the two results must agree, and
have the same number of convs, adds and concats."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from convrewrite.pipeline import rewrite_model  # noqa: E402
from convrewrite.target import load_target  # noqa: E402
from convrewrite.tvm.build import build, import_onnx  # noqa: E402
from convrewrite.tvm.run import run_executable  # noqa: E402
from convrewrite.tvm.relax_lowering import legal_after  # noqa: E402
from convrewrite.tvm.relax_passes import ChannelSplit  # noqa: E402
from tests.conv_cases import conv_model, op_count, random_input, run  # noqa: E402


def limits(max_in=None, max_out=None, accumulate="chain"):
    return load_target({"name": "test", "rewrite": {"accumulate": accumulate},
                        "conv": {"max_in_channels": max_in, "max_out_channels": max_out}})


def relax_ops(mod) -> dict[str, int]:
    from tvm import relax
    counts: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            counts[expr.op.name] = counts.get(expr.op.name, 0) + 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return counts


CASES = [
    # cin, cout, kernel, groups, max_in, max_out, accumulate
    (64, 16, (3, 3), 1, 16, None, "chain"),
    (16, 64, (3, 3), 1, None, 24, "chain"),
    (48, 40, (1, 1), 1, 16, 16, "tree"),
    (64, 64, (3, 3), 4, 32, 32, "chain"),          # whole groups per chunk
    (32, 32, (3, 3), 32, 8, 8, "chain"),           # depthwise chunks
    (40, 24, (3,), 1, 16, None, "tree"),           # 1-D
    (24, 16, (3, 3, 3), 1, 8, None, "chain"),      # 3-D
]


@pytest.mark.parametrize("cin,cout,kernel,groups,max_in,max_out,accumulate", CASES)
def test_relax_split_equals_onnx_split(cin, cout, kernel, groups, max_in, max_out, accumulate):
    target = limits(max_in, max_out, accumulate)
    spatial = {1: (12,), 2: (6, 6), 3: (4, 4, 4)}[len(kernel)]
    model = conv_model(cin=cin, cout=cout, kernel=kernel, groups=groups, spatial=spatial,
                       pads=[1] * (2 * len(kernel)))
    onnx_split, result = rewrite_model(model, target)
    assert result.records and not result.remaining
    feeds = random_input(model)
    onnx_out = run(onnx_split, feeds)[0]

    mod = import_onnx(model, feeds)
    split_mod = ChannelSplit(target)(mod)
    assert legal_after(mod, target) and not legal_after(split_mod, target)
    ops = relax_ops(split_mod)
    conv_op = f"relax.nn.conv{len(kernel)}d"
    assert ops.get(conv_op, 0) == op_count(onnx_split, "Conv")
    # the ONNX bias add and the Relax frontend's bias add are one each: the rest are partial sums
    assert ops.get("relax.add", 0) - 1 == op_count(onnx_split, "Add")
    assert ops.get("relax.concat", 0) == op_count(onnx_split, "Concat")

    relax_out = run_executable(build(split_mod, "llvm", schedules=False), "llvm",
                               [feeds[k] for k in feeds])[0]
    scale = max(1.0, float(np.abs(onnx_out).max()))
    np.testing.assert_allclose(relax_out, onnx_out, atol=2e-5 * scale, rtol=1e-4)


def test_legal_convs_are_untouched():
    model = conv_model(cin=8, cout=8)
    feeds = random_input(model)
    mod = import_onnx(model, feeds)
    out = ChannelSplit(limits(16, 16))(mod)
    tvm.ir.assert_structural_equal(out["main"], mod["main"])


GROUP_CASES = [
    # cin, cout, kernel, groups, target's group forms, groups per conv (None: by cost)
    (32, 32, (3, 3), 4, ["regular"], None),
    (16, 16, (3, 3), 16, ["regular"], None),            # depthwise on an engine without it
    (24, 48, (3, 3), 6, ["regular", "depthwise"], 1),   # a plain conv per group
    (32, 32, (3, 3), 8, ["regular"], 4),                 # block-diagonal chunks of 4 groups
]


@pytest.mark.parametrize("cin,cout,kernel,groups,forms,per_conv", GROUP_CASES)
def test_relax_group_lowering_equals_onnx(cin, cout, kernel, groups, forms, per_conv):
    from convrewrite.lowerings.groups import GroupLowering as OnnxGroupLowering
    from convrewrite.pipeline import DEFAULT_PASSES
    from convrewrite.tvm.relax_passes import GroupLowering
    target = load_target({"name": "test", "conv": {"groups": forms}})
    model = conv_model(cin=cin, cout=cout, kernel=kernel, groups=groups, pads=[1, 1, 1, 1])
    passes = tuple(OnnxGroupLowering(per_conv) if p.name == "groups" else p
                   for p in DEFAULT_PASSES)
    onnx_lowered, result = rewrite_model(model, target, passes)
    assert result.records and not result.remaining
    feeds = random_input(model)
    onnx_out = run(onnx_lowered, feeds)[0]

    mod = import_onnx(model, feeds)
    lowered = GroupLowering(target, per_conv)(mod)
    ops = relax_ops(lowered)
    assert ops.get("relax.nn.conv2d", 0) == op_count(onnx_lowered, "Conv")
    assert ops.get("relax.concat", 0) == op_count(onnx_lowered, "Concat")
    assert "groups=1," in lowered.script() and f"groups={groups}," not in lowered.script()
    relax_out = run_executable(build(lowered, "llvm", schedules=False), "llvm",
                               [feeds[k] for k in feeds])[0]
    scale = max(1.0, float(np.abs(onnx_out).max()))
    np.testing.assert_allclose(relax_out, onnx_out, atol=2e-5 * scale, rtol=1e-4)
