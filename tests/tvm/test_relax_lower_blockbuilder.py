"""Each lowering ported to the contract, natively on a Relax module written with TVM's own
BlockBuilder (no ONNX anywhere on the way in): the conv the target rejects is rewritten by the
lowering alone, every rewrite is verified on TVM (and against onnxruntime where the weight is a
constant), nothing the target rejects is left, and the rewritten module computes what the
original does, with the weight a constant or a function parameter and the batch symbolic. Where
the plan does not take a combination (a transposed conv's computed weight, a form another pass
owns that is cheaper), the module is left as it was and the decline says why."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax, tirx  # noqa: E402

from convrewrite.lowerings.batch import BatchSplit  # noqa: E402
from convrewrite.lowerings.dead_taps import DeadTaps  # noqa: E402
from convrewrite.lowerings.depth_multiplier import DepthMultiplierLowering  # noqa: E402
from convrewrite.lowerings.dilation import DilationLowering  # noqa: E402
from convrewrite.lowerings.dilation_taps import DilationTaps  # noqa: E402
from convrewrite.lowerings.kernel_split import KernelSplit  # noqa: E402
from convrewrite.lowerings.padding import ExplicitPadding  # noqa: E402
from convrewrite.lowerings.rank import RankLowering  # noqa: E402
from convrewrite.lowerings.stride import StrideSubsample  # noqa: E402
from convrewrite.lowerings.tiling import SpatialTiling  # noqa: E402
from convrewrite.lowerings.transposed import TransposedToConv  # noqa: E402
from convrewrite.lowerings.transposed_shape import TransposedShape  # noqa: E402
from convrewrite.target import load_target  # noqa: E402
from convrewrite.tvm.build import build  # noqa: E402
from convrewrite.tvm.relax_lower import Lower, RelaxLog  # noqa: E402

CONVS = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}
TRANSPOSED = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose}


def conv_module(x_shape, w_shape, weight_param: bool, symbolic_batch: bool, seed=0,
                transposed=False, **attrs):
    """``main(x[, w])``: relu, then the conv or transposed conv (``attrs`` in Relax's
    spelling); the weight."""
    rng = np.random.default_rng(seed)
    w_value = rng.uniform(-0.5, 0.5, w_shape).astype("float32")
    batch = tirx.Var("n", "int64") if symbolic_batch else x_shape[0]
    x = relax.Var("x", relax.TensorType([batch, *x_shape[1:]], "float32"))
    params = [x]
    if weight_param:
        w = relax.Var("w", relax.TensorType(list(w_shape), "float32"))
        params.append(w)
    else:
        w = relax.const(w_value)
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(x))
            conv = (TRANSPOSED if transposed else CONVS)[len(w_shape) - 2]
            out = bb.emit_output(conv(y, w, **attrs))
        bb.emit_func_output(out)
    return bb.get(), w_value


def run_main(mod, args):
    vm = relax.VirtualMachine(build(mod, "llvm", schedules=False), tvm.cpu(0))
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


def relax_ops(mod) -> dict[str, int]:
    counts: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            counts[expr.op.name] = counts.get(expr.op.name, 0) + 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return counts


NO_S2D = ["Conv", "Slice", "Pad", "Relu"]
S2D = {"relax.reshape": 2, "relax.permute_dims": 1, "relax.nn.conv2d": 1, "relax.nn.pad": 1}
NO_SLICE = ["Conv", "Split", "Concat", "Pad", "Add", "Relu"]
S2B = {"relax.nn.pad": 1, "relax.reshape": 4, "relax.permute_dims": 2, "relax.nn.conv2d": 1}

CASES = [
    # id, lowering, target, x shape, w shape, Relax conv attributes, ops the rewrite has (or a
    # pair: with a constant weight, with a weight parameter)
    ("padding-pad", ExplicitPadding(), {"conv": {"max_pad": 0}}, (1, 4, 9, 9), (8, 4, 3, 3),
     dict(padding=[1, 2, 1, 0]), {"relax.nn.pad": 1}),
    ("padding-crop", ExplicitPadding(),
     {"conv": {"max_pad": 1, "same_pad_only": True, "symmetric_pad": True}}, (1, 4, 8, 8),
     (6, 4, 3, 3), dict(padding=[0, 2, 1, 0]), {"relax.nn.pad": 1, "relax.strided_slice": 1}),
    ("padding-crop-strided", ExplicitPadding(),
     {"conv": {"max_pad": 1, "same_pad_only": True}}, (1, 3, 11, 10), (5, 3, 3, 3),
     dict(padding=[0, 0, 0, 0], strides=[2, 2]), {"relax.nn.pad": 1, "relax.strided_slice": 1}),
    ("padding-1d", ExplicitPadding(), {"conv": {"max_pad": 0}}, (1, 3, 12), (5, 3, 3),
     dict(padding=[2, 1]), {"relax.nn.pad": 1}),
    ("dead_taps", DeadTaps(), {"conv": {"max_dilation": 1}}, (1, 8, 6, 6), (4, 8, 3, 3),
     dict(padding=[36] * 4, dilation=[36, 36]), {"relax.nn.conv2d": 1}),
    ("dead_taps-one-axis", DeadTaps(), {"conv": {"max_dilated_kernel_area": 25}}, (1, 4, 8, 8),
     (4, 4, 3, 3), dict(padding=[2, 12, 2, 12], dilation=[2, 12]), {"relax.nn.conv2d": 1}),
    ("depth_multiplier-gather", DepthMultiplierLowering(), {"conv": {"max_depth_multiplier": 1}},
     (1, 4, 8, 8), (12, 1, 3, 3), dict(padding=[1] * 4, groups=4),
     {"relax.take": 1, "relax.nn.conv2d": 1}),
    ("depth_multiplier-one-hot", DepthMultiplierLowering(),
     {"conv": {"max_depth_multiplier": 1}, "ops": ["Conv"]}, (1, 3, 7, 7), (6, 1, 3, 3),
     dict(padding=[1] * 4, groups=3, strides=[2, 2]), {"relax.take": 0, "relax.nn.conv2d": 2}),
    ("depth_multiplier-1d-vela3", DepthMultiplierLowering(), "ethos-u55-vela3", (1, 4, 16),
     (8, 1, 3), dict(padding=[1, 1], groups=4), {"relax.take": 0, "relax.nn.conv1d": 2}),
    ("batch-split", BatchSplit(), {"conv": {"max_batch": 2}}, (5, 4, 6, 6), (6, 4, 3, 3),
     dict(padding=[1] * 4), {"relax.split": 1, "relax.nn.conv2d": 3, "relax.concat": 1}),
    ("batch-slices", BatchSplit(), {"conv": {"max_batch": 1},
                                    "ops": ["Conv", "Slice", "Concat", "Relu"]},
     (3, 4, 6, 6), (6, 4, 3, 3), dict(padding=[1] * 4),
     {"relax.split": 0, "relax.nn.conv2d": 3, "relax.concat": 1}),
    ("dilation_taps", DilationTaps(), {"conv": {"max_dilation": 1, "max_batch": 1}},
     (1, 32, 24, 24), (32, 32, 3, 3), dict(padding=[6] * 4, dilation=[6, 6]),
     {"relax.nn.pad": 1, "relax.nn.conv2d": 9, "relax.add": 8}),
    ("dilation_taps-1d-strided", DilationTaps(), {"conv": {"max_dilation": 1, "max_batch": 1}},
     (1, 32, 64), (32, 32, 3), dict(padding=[12, 12], dilation=[12], strides=[2]),
     {"relax.nn.pad": 1, "relax.nn.conv1d": 3, "relax.add": 2}),
    ("transposed-depth_to_space", TransposedToConv(), {"conv": {"transposed": False}},
     (1, 4, 8, 8), (4, 6, 3, 3), dict(padding=[1] * 4, strides=[2, 2], output_padding=[1, 1],
                                      transposed=True),
     {"relax.nn.conv2d": 4, "relax.concat": 1, "relax.reshape": 2,
      "relax.nn.conv2d_transpose": 0}),
    ("transposed-reshape", TransposedToConv(),
     {"conv": {"transposed": False}, "ops": ["Conv", "Reshape", "Concat", "Slice", "Pad", "Relu"]},
     (1, 4, 8, 8), (4, 6, 3, 3), dict(padding=[1] * 4, strides=[2, 2], output_padding=[1, 1],
                                      transposed=True),
     {"relax.nn.conv2d": 4, "relax.reshape": 9, "relax.concat": 3, "relax.permute_dims": 0}),
    # no DepthToSpace: Concats on the next axis, one channels-last Reshape between two permutes
    ("transposed-channels_last", TransposedToConv(),
     {"conv": {"transposed": False}, "max_tensor_batch": 1,
      "ops": ["Conv", "Reshape", "Concat", "Slice", "Pad", "Relu", "Transpose"]},
     (1, 4, 5, 6), (4, 6, 3, 3), dict(strides=[3, 3], transposed=True),
     ({"relax.nn.conv2d": 9, "relax.concat": 4, "relax.permute_dims": 2, "relax.reshape": 1},
      {"relax.nn.conv2d": 9, "relax.concat": 4})),
    ("transposed-1d", TransposedToConv(), {"conv": {"transposed": False}}, (1, 4, 10),
     (4, 3, 8), dict(padding=[2, 2], strides=[4], transposed=True),
     {"relax.nn.conv1d": 4, "relax.concat": 1, "relax.nn.conv1d_transpose": 0}),
    ("transposed-grouped", TransposedToConv(), {"conv": {"transposed": False}}, (1, 4, 6, 6),
     (4, 3, 3, 3), dict(padding=[1] * 4, strides=[2, 2], output_padding=[1, 1], groups=2,
                        transposed=True),
     {"relax.nn.conv2d": 4, "relax.nn.conv2d_transpose": 0}),
    ("transposed-zero-insertion", TransposedToConv(), {"conv": {"transposed": False}},
     (1, 4, 7, 7), (4, 4, 3, 3), dict(padding=[1] * 4, strides=[2, 2], dilation=[2, 2],
                                      transposed=True),
     {"relax.nn.pad": 2, "relax.nn.conv2d": 1, "relax.nn.conv2d_transpose": 0}),
    ("stride-subsample-out", StrideSubsample(), {"conv": {"max_stride": 1}, "ops": NO_S2D},
     (1, 4, 16, 15), (8, 4, 3, 3), dict(padding=[1] * 4, strides=[2, 2]),
     {"relax.nn.conv2d": 1, "relax.strided_slice": 1}),
    ("stride-subsample-in", StrideSubsample(), {"conv": {"max_stride": 1}}, (1, 8, 9, 9),
     (4, 8, 1, 1), dict(strides=[2, 2]), {"relax.nn.conv2d": 1, "relax.strided_slice": 1}),
    ("stride-1d", StrideSubsample(), {"conv": {"max_stride": 1}}, (1, 4, 20), (6, 4, 3),
     dict(padding=[1, 1], strides=[3]), {"relax.nn.conv1d": 1, "relax.strided_slice": 1}),
    # a constant weight is folded into channels; a parameter's taps cannot be, so it subsamples
    ("stride-space_to_depth", StrideSubsample(), {"conv": {"max_stride": 1}}, (1, 4, 12, 12),
     (256, 4, 5, 5), dict(padding=[2] * 4, strides=[2, 2]),
     (S2D, {"relax.nn.conv2d": 1, "relax.strided_slice": 1, "relax.reshape": 0})),
    ("stride-space_to_depth-crop", StrideSubsample(), {"conv": {"max_stride": 1}},
     (1, 4, 16, 16), (256, 4, 5, 5), dict(padding=[0] * 4, strides=[3, 3]),
     ({**S2D, "relax.strided_slice": 1, "relax.nn.pad": 0},
      {"relax.nn.conv2d": 1, "relax.strided_slice": 1})),
    # a constant weight takes the dense kernel; a parameter's holes cannot be written into it,
    # so it goes space-to-batch (here with a crop of the interleaved output)
    ("dilation-dense-or-space_to_batch", DilationLowering(), {"conv": {"max_dilation": 1}},
     (1, 8, 17, 15), (8, 8, 3, 3), dict(padding=[2] * 4, dilation=[2, 2]),
     ({"relax.nn.conv2d": 1, "relax.reshape": 0},
      {**S2B, "relax.strided_slice": 1})),
    ("dilation-1d", DilationLowering(), {"conv": {"max_dilation": 1}}, (1, 8, 30), (8, 8, 3),
     dict(padding=[2, 2], dilation=[2]),
     ({"relax.nn.conv1d": 1, "relax.reshape": 0},
      {"relax.nn.pad": 1, "relax.reshape": 4, "relax.permute_dims": 2, "relax.nn.conv1d": 1})),
    # the kernel zero-extended to a multiple of the tile (a computed weight by a pad in the
    # graph), one conv per tile over a shifted view, the partial outputs summed
    ("kernel_split-7x7", KernelSplit(), {"conv": {"max_kernel": 3}}, (1, 4, 12, 12),
     (6, 4, 7, 7), dict(padding=[3] * 4),
     ({"relax.nn.conv2d": 9, "relax.nn.pad": 1, "relax.strided_slice": 9, "relax.add": 8},
      {"relax.nn.conv2d": 9, "relax.nn.pad": 2, "relax.strided_slice": 18, "relax.add": 8})),
    ("kernel_split-1d-strided-dilated", KernelSplit(), {"conv": {"max_kernel": 3}},
     (1, 4, 30), (6, 4, 5), dict(padding=[2, 3], strides=[2], dilation=[2]),
     ({"relax.nn.conv1d": 2, "relax.nn.pad": 1, "relax.strided_slice": 2, "relax.add": 1},
      {"relax.nn.conv1d": 2, "relax.nn.pad": 2, "relax.strided_slice": 4, "relax.add": 1})),
    # 3 taps 4 apart span 9 rows, over 5: two taps per tile, the kernel extended to 4
    ("kernel_split-dilated-height", KernelSplit(), {"conv": {"max_dilated_kernel_height": 5}},
     (1, 4, 16, 16), (4, 4, 3, 3), dict(padding=[4, 1, 4, 1], dilation=[4, 1]),
     ({"relax.nn.conv2d": 2, "relax.nn.pad": 1, "relax.add": 1},
      {"relax.nn.conv2d": 2, "relax.nn.pad": 2, "relax.add": 1})),
    # no Slice (NVDLA): the views are windows of one Split per axis, Concat where they overlap
    ("kernel_split-no-slice", KernelSplit(), {"conv": {"max_kernel": 3}, "ops": NO_SLICE},
     (1, 4, 12, 12), (6, 4, 5, 5), dict(padding=[2] * 4),
     {"relax.nn.conv2d": 4, "relax.split": 3, "relax.concat": 6, "relax.add": 3}),
    # TRANSPOSE_CONV's output shape: output_padding moved into the end pads, or (where the output
    # keeps bias-only rows past the last tap) restored by a zero Pad after the conv
    ("transposed_shape-same-outputs", TransposedShape(), {"conv": {"transposed_valid_shape": True}},
     (1, 8, 5, 7), (8, 6, 3, 3), dict(padding=[1] * 4, strides=[2, 2], output_padding=[1, 1],
                                      transposed=True),
     {"relax.nn.conv2d_transpose": 1, "relax.nn.pad": 0}),
    ("transposed_shape-1x1-stride", TransposedShape(),
     {"conv": {"transposed_valid_shape": True}}, (1, 4, 6), (4, 5, 1),
     dict(strides=[2], transposed=True), {"relax.nn.conv1d_transpose": 1, "relax.nn.pad": 0}),
    ("transposed_shape-bias-rows", TransposedShape(), {"conv": {"transposed_valid_shape": True}},
     (1, 8, 5, 7), (8, 6, 3, 3), dict(strides=[2, 2], output_padding=[1, 1], transposed=True),
     {"relax.nn.conv2d_transpose": 1, "relax.nn.pad": 1}),
    # maps over the engine's size: output tiles, each the conv over its window (with the halo)
    ("tiling-2d", SpatialTiling(), {"conv": {"input_height": [1, 8], "input_width": [1, 8]}},
     (1, 4, 20, 20), (8, 4, 3, 3), dict(padding=[1] * 4),
     {"relax.nn.pad": 1, "relax.strided_slice": 16, "relax.nn.conv2d": 16, "relax.concat": 5}),
    ("tiling-1d-strided", SpatialTiling(), {"conv": {"input_width": [1, 12]}}, (1, 2, 40),
     (4, 2, 5), dict(padding=[2, 2], strides=[2]),
     {"relax.nn.pad": 1, "relax.strided_slice": 5, "relax.nn.conv1d": 5, "relax.concat": 1}),
    ("tiling-no-slice", SpatialTiling(),
     {"conv": {"input_height": [1, 8], "input_width": [1, 8]}, "ops": NO_SLICE},
     (1, 4, 20, 20), (8, 4, 3, 3), dict(padding=[1] * 4),
     {"relax.split": 5, "relax.concat": 25, "relax.nn.conv2d": 16, "relax.strided_slice": 0}),
    # under the engine's minimum: zeros appended, the extra outputs cropped
    ("tiling-grow", SpatialTiling(), {"conv": {"input_height": [4, 64], "input_width": [4, 64]}},
     (1, 4, 2, 3), (4, 4, 1, 1), dict(),
     {"relax.nn.pad": 1, "relax.nn.conv2d": 1, "relax.strided_slice": 1}),
    # ranks the engine lacks, as 2-D convs: 1-D over a one-row map; 3-D per depth tap over the
    # frames, on the batch axis or (batch 1) per output frame
    ("rank-1d", RankLowering(), {"conv": {"spatial_ranks": [2]}}, (1, 4, 20), (6, 4, 5),
     dict(padding=[2, 2], strides=[2]),
     ({"relax.reshape": 2, "relax.nn.conv2d": 1, "relax.nn.conv1d": 0},
      {"relax.reshape": 3, "relax.nn.conv2d": 1, "relax.nn.conv1d": 0})),
    ("rank-1d-transposed", RankLowering(), {"conv": {"spatial_ranks": [2]}}, (1, 4, 10),
     (4, 3, 4), dict(padding=[1, 1], strides=[2], output_padding=[1], transposed=True),
     ({"relax.reshape": 2, "relax.nn.conv2d_transpose": 1},
      {"relax.reshape": 3, "relax.nn.conv2d_transpose": 1})),
    ("rank-3d-depth_batch", RankLowering(), {"conv": {"spatial_ranks": [2]}}, (1, 4, 5, 6, 6),
     (6, 4, 3, 3, 3), dict(padding=[1] * 6),
     ({"relax.reshape": 6, "relax.nn.pad": 1, "relax.permute_dims": 2, "relax.strided_slice": 3,
       "relax.nn.conv2d": 3, "relax.add": 2, "relax.nn.conv3d": 0},
      {"relax.reshape": 9, "relax.strided_slice": 6, "relax.nn.conv2d": 3, "relax.add": 2})),
    ("rank-3d-per_frame", RankLowering(), {"conv": {"spatial_ranks": [2], "max_batch": 1}},
     (1, 4, 3, 6, 6), (6, 4, 2, 3, 3), dict(padding=[0, 1, 1, 0, 1, 1], strides=[1, 2, 1]),
     ({"relax.reshape": 7, "relax.split": 1, "relax.nn.conv2d": 4, "relax.add": 2,
       "relax.concat": 1, "relax.permute_dims": 0},
      {"relax.reshape": 9, "relax.strided_slice": 2, "relax.split": 1, "relax.nn.conv2d": 4})),
    # a static batch over the engine's: per chunk (2 x 4 convs); a symbolic one counts as 1
    ("rank-3d-per_frame-batch-chunks", RankLowering(),
     {"conv": {"spatial_ranks": [2], "max_batch": 1}}, (2, 4, 3, 6, 6), (6, 4, 2, 3, 3),
     dict(padding=[0, 1, 1, 0, 1, 1]), {"relax.nn.conv3d": 0}),
]

# Where a case's lowering makes no rewrite, by (weight is a parameter, batch is symbolic): the
# words of its decline, or "" where the conv breaks no rule at all (a symbolic batch is not
# over max_batch: only what is proven is reported). Every other combination is rewritten.
NOT_REWRITTEN = {
    "batch-split": {(False, True): "", (True, True): ""},
    "batch-slices": {(False, True): "", (True, True): ""},
    "dilation_taps-1d-strided": {(False, False): "the dense form is cheaper (cost x8.33",
                                 (False, True): "the dense form is cheaper (cost x8.33"},
    "transposed-reshape": {(True, s): "the target's ops list lacks Transpose, to lay out its "
                           "weight (computed at run time)" for s in (False, True)},
}


@pytest.mark.parametrize("weight_param", [False, True], ids=["constant", "parameter"])
@pytest.mark.parametrize("symbolic_batch", [False, True], ids=["static", "symbolic"])
@pytest.mark.parametrize("case,lowering,target,x_shape,w_shape,attrs,ops", CASES,
                         ids=[c[0] for c in CASES])
def test_lowering_on_a_blockbuilder_module(case, lowering, target, x_shape, w_shape, attrs, ops,
                                           weight_param, symbolic_batch):
    target = load_target(target if isinstance(target, str) else {"name": "t", **target})
    mod, w_value = conv_module(x_shape, w_shape, weight_param, symbolic_batch, **attrs)
    log = RelaxLog()
    lowered = Lower(target, (lowering,), log)(mod)
    declined = NOT_REWRITTEN.get(case, {}).get((weight_param, symbolic_batch))
    if declined is not None:            # the conv is left as it was, and the log says why
        assert not log.records and lowered.script() == mod.script()
        reasons = [d.decline.reason for d in log.declines]
        assert (declined in " ".join(reasons) and log.remaining) if declined \
            else not (reasons or log.remaining), reasons
        return
    assert len(log.records) == 1, log.declines
    record = log.records[0]
    assert record.pass_name == lowering.name and record.verify["passed"], record
    assert ("onnxruntime" in " ".join(record.notes)) == (not weight_param)
    assert not log.remaining and not log.declines
    found = relax_ops(lowered)
    ops = ops[weight_param] if isinstance(ops, tuple) else ops
    assert all(found.get(op, 0) == n for op, n in ops.items()), found
    x = np.random.default_rng(1).uniform(-1, 1, (2, *x_shape[1:]) if symbolic_batch
                                         else x_shape).astype("float32")
    args = [x, w_value] if weight_param else [x]
    want = run_main(mod, args)
    np.testing.assert_allclose(run_main(lowered, args), want,
                               atol=1e-5 * max(1.0, float(np.abs(want).max())), rtol=1e-5)
