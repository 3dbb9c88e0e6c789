"""The registered lowerings natively on Relax (``tvm.relax_lower``): the same plans and emitters
as the ONNX path, on modules from TVM's ONNX frontend (compared with the ONNX rewrite, op for op
and on numbers) and from TVM's own ``relax.frontend.nn`` (a symbolic batch, weights that are
function parameters), every rewrite verified on TVM (and against onnxruntime where the weight
is a constant) and recorded like an ONNX rewrite."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax  # noqa: E402
from tvm.relax.frontend import nn  # noqa: E402

from convrewrite.lowerings.channel_split import ChannelSplit  # noqa: E402
from convrewrite.lowerings.groups import GroupLowering  # noqa: E402
from convrewrite.pipeline import rewrite_model  # noqa: E402
from convrewrite.target import load_target  # noqa: E402
from convrewrite.tvm.build import build, import_onnx  # noqa: E402
from convrewrite.tvm.relax_lower import Lower, RelaxLog, lowering_pass  # noqa: E402
from convrewrite.tvm.relax_bridge import violations_in  # noqa: E402
from convrewrite.tvm.run import run_executable  # noqa: E402
from tests.conv_cases import conv_model, op_count, random_input, run  # noqa: E402

CHANNELS = {"max_in_channels", "max_out_channels"}


def limits(max_in=None, max_out=None, accumulate="chain", **conv):
    return load_target({"name": "test", "rewrite": {"accumulate": accumulate},
                        "conv": {"max_in_channels": max_in, "max_out_channels": max_out, **conv}})


def relax_ops(mod, func="main") -> dict[str, int]:
    counts: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            counts[expr.op.name] = counts.get(expr.op.name, 0) + 1

    relax.analysis.post_order_visit(mod[func], visit)
    return counts


def assert_verified(log: RelaxLog, count: int, against_onnxruntime: bool):
    assert len(log.records) == count, log.declines
    for record in log.records:
        assert record.verify is not None and record.verify["passed"], record
        assert ("onnxruntime" in " ".join(record.notes)) == against_onnxruntime
    assert not log.remaining


SPLIT_CASES = [
    # cin, cout, kernel, groups, max_in, max_out, accumulate
    (64, 16, (3, 3), 1, 16, None, "chain"),
    (16, 64, (3, 3), 1, None, 24, "chain"),
    (48, 40, (1, 1), 1, 16, 16, "tree"),
    (64, 64, (3, 3), 4, 32, 32, "chain"),          # whole groups per chunk
    (32, 32, (3, 3), 32, 8, 8, "chain"),           # depthwise chunks
    (40, 24, (3,), 1, 16, None, "tree"),           # 1-D
    (24, 16, (3, 3, 3), 1, 8, None, "chain"),      # 3-D
]


@pytest.mark.parametrize("cin,cout,kernel,groups,max_in,max_out,accumulate", SPLIT_CASES)
def test_channel_split_on_the_onnx_frontends_module(cin, cout, kernel, groups, max_in, max_out,
                                                   accumulate):
    target = limits(max_in, max_out, accumulate)
    spatial = {1: (12,), 2: (6, 6), 3: (4, 4, 4)}[len(kernel)]
    model = conv_model(cin=cin, cout=cout, kernel=kernel, groups=groups, spatial=spatial,
                       pads=[1] * (2 * len(kernel)))
    onnx_split, result = rewrite_model(model, target)
    assert result.records and not result.remaining
    feeds = random_input(model)
    mod = import_onnx(model, feeds)
    log = RelaxLog()
    split_mod = lowering_pass("channel_split", target, log)(mod)
    assert_verified(log, 1, against_onnxruntime=True)
    assert log.records[0].rewrite == result.records[0].rewrite      # the same plan, in words
    assert violations_in(mod, target, CHANNELS) and not violations_in(split_mod, target, CHANNELS)
    ops = relax_ops(split_mod)
    assert ops.get(f"relax.nn.conv{len(kernel)}d", 0) == op_count(onnx_split, "Conv")
    # the ONNX bias add and the Relax frontend's bias add are one each: the rest are partial sums
    assert ops.get("relax.add", 0) - 1 == op_count(onnx_split, "Add")
    assert ops.get("relax.concat", 0) == op_count(onnx_split, "Concat")
    relax_out = run_executable(build(split_mod, "llvm", schedules=False), "llvm",
                               [feeds[k] for k in feeds])[0]
    want = run(onnx_split, feeds)[0]
    np.testing.assert_allclose(relax_out, want, atol=2e-5 * max(1.0, float(np.abs(want).max())),
                               rtol=1e-4)


def test_legal_convs_are_untouched():
    model = conv_model(cin=8, cout=8)
    mod = import_onnx(model, random_input(model))
    log = RelaxLog()
    out = Lower(limits(16, 16), log=log)(mod)
    tvm.ir.assert_structural_equal(out["main"], mod["main"])
    assert not log.records and not log.declines


GROUP_CASES = [
    # cin, cout, kernel, groups, target's group forms, groups per conv (None: by cost)
    (32, 32, (3, 3), 4, ["regular"], None),
    (16, 16, (3, 3), 16, ["regular"], None),            # depthwise on an engine without it
    (24, 48, (3, 3), 6, ["regular", "depthwise"], 1),   # a plain conv per group
    (32, 32, (3, 3), 8, ["regular"], 4),                 # block-diagonal chunks of 4 groups
]


@pytest.mark.parametrize("cin,cout,kernel,groups,forms,per_conv", GROUP_CASES)
def test_group_lowering_on_the_onnx_frontends_module(cin, cout, kernel, groups, forms, per_conv):
    target = load_target({"name": "test", "conv": {"groups": forms}})
    model = conv_model(cin=cin, cout=cout, kernel=kernel, groups=groups, pads=[1, 1, 1, 1])
    onnx_lowered, result = rewrite_model(model, target, (GroupLowering(per_conv),))
    assert result.records and not result.remaining
    feeds = random_input(model)
    log = RelaxLog()
    lowered = Lower(target, (GroupLowering(per_conv),), log)(import_onnx(model, feeds))
    assert_verified(log, 1, against_onnxruntime=True)
    ops = relax_ops(lowered)
    assert ops.get("relax.nn.conv2d", 0) == op_count(onnx_lowered, "Conv")
    assert ops.get("relax.concat", 0) == op_count(onnx_lowered, "Concat")
    assert "groups=1," in lowered.script() and f"groups={groups}," not in lowered.script()
    relax_out = run_executable(build(lowered, "llvm", schedules=False), "llvm",
                               [feeds[k] for k in feeds])[0]
    want = run(onnx_lowered, feeds)[0]
    np.testing.assert_allclose(relax_out, want, atol=2e-5 * max(1.0, float(np.abs(want).max())),
                               rtol=1e-4)


class WideThenDepthwise(nn.Module):
    """A block as TVM's own frontend writes it: weights are parameters of the function."""

    def __init__(self):
        self.conv = nn.Conv2D(64, 24, 3, padding=1, bias=False)
        self.dw = nn.Conv2D(24, 24, 3, padding=1, groups=24, bias=False)

    def forward(self, x):
        return self.dw(nn.op.relu(self.conv(x)))


def nn_module():
    mod, params = WideThenDepthwise().export_tvm(
        {"forward": {"x": nn.spec.Tensor(["n", 64, 8, 8], "float32")}})
    rng = np.random.default_rng(3)
    weights = [rng.uniform(-0.2, 0.2, [int(d) for d in p.shape]).astype("float32")
               for _, p in params]
    return mod, weights


def run_forward(mod, args):
    vm = relax.VirtualMachine(build(mod, "llvm", schedules=False), tvm.cpu(0))
    return vm["forward"](*[tvm.runtime.tensor(a) for a in args]).numpy()


@pytest.mark.parametrize("lowering,target,rewrites,words", [
    (ChannelSplit(), limits(16), 2, "4 in x 1 out chunks"),      # the wide conv, the depthwise
    (GroupLowering(), limits(groups=["regular"]), 1, "(the weight is computed: one conv per group)"),
], ids=["channel_split", "groups"])
def test_lowering_on_tvms_own_frontend(lowering, target, rewrites, words):
    """Symbolic batch, computed weights: the plans that only cut weights take them as they are
    (a block-diagonal weight would need constants, so the group lowering makes a conv per
    group); the module stays symbolic and runs at any batch."""
    mod, weights = nn_module()
    log = RelaxLog()
    lowered = Lower(target, (lowering,), log)(mod)
    assert_verified(log, rewrites, against_onnxruntime=False)
    assert words in log.records[0].rewrite
    assert not violations_in(lowered, target, lowering.fixes)
    assert "R.Tensor((n, 24, 8, 8)" in lowered.script()             # still symbolic
    x = np.random.default_rng(4).uniform(-1, 1, (2, 64, 8, 8)).astype("float32")
    np.testing.assert_allclose(run_forward(lowered, [x, *weights]),
                               run_forward(mod, [x, *weights]), atol=1e-5, rtol=1e-4)
    report = log.report(target=target.name)
    text = report.render()
    assert report.status == "ok" and any(rule in text for rule in lowering.fixes)
    assert "each rewrite verified on its own" in text


def test_a_wrong_emitter_is_caught(monkeypatch):
    """Verification is not vacuous: an emitter 1% off fails its record."""
    from convrewrite.lowerings.channel_split import emit_channel_plan

    def scaled_emit(self, b, site, planned):
        out = emit_channel_plan(b, site, planned.detail)
        return b._emit(relax.op.multiply(out, relax.const(np.float32(1.01))), "scaled")

    monkeypatch.setattr(ChannelSplit, "emit", scaled_emit)
    model = conv_model(cin=32, cout=8, pads=[1] * 4)
    log = RelaxLog()
    Lower(limits(16), (ChannelSplit(),), log)(import_onnx(model, random_input(model)))
    assert len(log.records) == 1 and not log.records[0].verify["passed"]
    assert log.report().status == "mismatch"
