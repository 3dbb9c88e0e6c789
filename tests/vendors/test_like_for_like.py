"""Vela's per-layer cycles and the like-for-like estimate, on real Vela 5.2 output (regor,
ethos-u55-128) checked in under fixtures/like_for_like/: two probes and their ethos-u55 rewrites,
each side's TFLite op list, the op list of Vela's output file, Vela's log and its CSVs. Runs
without the venvs. The numbers asserted are read off those CSVs by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convrewrite.report import _vendor_lines
from convrewrite.vendors.like_for_like import like_for_like, pair_ops
from convrewrite.vendors.vela import (VelaResult, _placement, attribute_cycles, layer_cycles,
                                      read_compiled)

FIXTURES = Path(__file__).parent / "fixtures" / "like_for_like"


def side(case: str, which: str) -> tuple[dict, VelaResult]:
    folder = FIXTURES / case / which
    ops = json.loads((folder / "ops.json").read_text())
    compiled = json.loads((folder / "compiled.json").read_text())
    result = read_compiled(ops, compiled, (folder / "vela.log").read_text(), folder,
                           "ethos-u55-128", "regor")
    return ops, result


def by_name(result: VelaResult, name: str):
    return next(op for op in result.ops if op.name == name)


def test_each_layer_is_given_to_the_op_it_names():
    _, original = side("conv3d", "original")
    _, rewritten = side("conv3d", "rewritten")
    for r in (original, rewritten):               # every cycle of the total has its op
        assert r.unattributed_cycles == 0
        assert sum(op.cycles for op in r.ops) == r.cycles
    assert (original.cycles, rewritten.cycles) == (14560, 181356)
    # regor splits the 5-D ADD into six layers of one name, 1440 cycles each
    assert by_name(original, "PartitionedCall:0").cycles == 6 * 1440
    assert [op.cycles for op in original.ops if not op.npu] == [0.0, 0.0, 0.0]
    # the 5-D TRANSPOSE's six unnamed steps (#85 .. #100) come before its own named layer
    assert by_name(rewritten, "model_6/tf.nn.relu/Relu1").cycles == \
        2160 + 3600 + 2160 + 2160 + 5760 + 2160 + 2880


def test_legacy_layer_names_carry_a_suffix(tmp_path):
    """The legacy core names the AvgPool it makes of a RELU ``<relu>_avgpool``, and writes one
    table per NPU subgraph, each under its header (ConvNeXt-Tiny's 134 CPU ops cut it in 60)."""
    (tmp_path / "model_per-layer.csv").write_text(
        "TFLite_operator,NNG Operator,Op Cycles,Name\n"
        "UNKNOWN,AvgPool,5857.0,model/tf.nn.relu/Relu_avgpool\n"
        "TFLite_operator,NNG Operator,Op Cycles,Name\n"
        "CONV_2D,Conv2DBias,8160.0,model/tf.nn.convolution/convolution1\n"
        "CONV_2D,Conv2DBias,10.0,somewhere/else\n")
    ops = [_placement(i, {"type": t, "inputs": [], "outputs": [{"name": n, "shape": [1]}]})
           for i, (t, n) in enumerate([("RELU", "model/tf.nn.relu/Relu"),
                                       ("CONV_2D", "model/tf.nn.convolution/convolution1")])]
    assert attribute_cycles(ops, layer_cycles(tmp_path)) == 10.0
    assert [op.cycles for op in ops] == [5857.0, 8160.0]


def test_no_per_layer_file_leaves_npu_ops_unknown(tmp_path):
    ops = [_placement(0, {"type": "RELU", "inputs": [], "outputs": [{"name": "r", "shape": [1]}]})]
    assert attribute_cycles(ops, None) == 0.0 and ops[0].cycles is None


def test_transposed_conv_moved_off_the_cpu_compares_like_for_like():
    """The U-Net case: the original's TRANSPOSE_CONV is on the CPU, so its estimate leaves it
    out; the rewrite's runs on the NPU. Over the same work (the RELU before it and the
    STRIDED_SLICE after it) the two are equal."""
    a_ops, a = side("transposed", "original")
    b_ops, b = side("transposed", "rewritten")
    assert b.cycles / a.cycles > 2.3                       # 49382 vs 20992: different work
    got = like_for_like(a, a_ops, b, b_ops)
    assert (got.original_cycles, got.rewritten_cycles) == (4352 + 16640, 4352 + 16640)
    assert got.ratio == 1.0
    assert (got.cpu_ops, got.cpu_part_original_cycles, got.cpu_part_rewritten_cycles) == \
        (1, 0, 28390)
    assert got.cpu_macs == by_name(a, a.cpu_ops[0].name).macs > 0
    assert (got.cpu_ops_left, got.cpu_macs_left) == (0, 0)
    assert got.to_dict()["original_s"] == pytest.approx(20992 / 500e6)


def test_conv3d_rewrite_counts_the_layout_ops_it_adds():
    """The 3-D conv (DEQUANTIZE, float CONV_3D, QUANTIZE on the CPU) lowered to 2-D convs: the
    RELU and the 5-D ADD (paired with the rewrite's last 4-D ADD of as many elements, not the
    accumulating ADD before it) are the same work on both sides; the four layout ops the rewrite
    adds after that ADD, back to the 5-D output, read only paired ops, so they count against the
    rewrite in the like-for-like part."""
    a_ops, a = side("conv3d", "original")
    b_ops, b = side("conv3d", "rewritten")
    assert pair_ops(a.ops, b.ops) == {0: 0, 4: 18}
    got = like_for_like(a, a_ops, b, b_ops)
    tail = (2160 + 3600 + 2160 + 2880) + 0 + 0 + 2160     # TRANSPOSE, RESHAPE, TRANSPOSE, RESHAPE
    assert got.original_cycles == 5920 + 8640
    assert got.rewritten_cycles == 5920 + 8640 + tail
    assert got.cpu_ops == 3 and got.cpu_macs == by_name(a, "model/tf.nn.convolution/"
                                                                       "convolution1").macs
    assert got.rewritten_cycles + got.cpu_part_rewritten_cycles == b.cycles


def test_no_comparison_without_a_placement():
    a_ops, a = side("transposed", "original")
    rejected = VelaResult("ethos-u55-128", "regor", list(a.ops), rejected="no")
    assert like_for_like(a, a_ops, rejected, a_ops) is None
    assert like_for_like(rejected, a_ops, a, a_ops) is None


def test_report_prints_the_like_for_like_line():
    a_ops, a = side("transposed", "original")
    b_ops, b = side("transposed", "rewritten")
    v = {"compiler": "vela 5.2.0", "accelerator_config": "ethos-u55-128", "core": "regor",
         "models": {"original": {"regor": a.to_dict()}, "rewritten": {"regor": b.to_dict()}},
         "like_for_like": {"regor": like_for_like(a, a_ops, b, b_ops).to_dict()},
         "passed": True, "out_dir": None}
    line = next(x for x in _vendor_lines(v) if "like for like" in x)
    assert "0.042 ms vs the original's 0.042 ms (1.00x)" in line
    assert "where the original ran 1 op (590k MACs) on the CPU, the rewrite spends 0.0568 ms" \
        in line and "0 CPU ops left" in line


def op_list(ops: list[tuple[str, list[str], str]]) -> dict:
    """A TFLite op list of (type, input names, output name), every tensor 1x2x2x8 (a CONV_2D
    reads a 1x1 weight ``w``), reading graph input ``x``."""
    def tensor(name):
        return {"name": name, "shape": [8, 1, 1, 8] if name == "w" else [1, 2, 2, 8]}
    return {"inputs": [tensor("x")], "outputs": [tensor(ops[-1][2])],
            "ops": [{"type": t, "inputs": [tensor(n) for n in ins], "outputs": [tensor(out)]}
                    for t, ins, out in ops]}


def test_a_residual_add_pairs_by_what_it_reads_and_feeds():
    """r3d_18's last stage: the original's residual ADD reads only CPU ops (its convs ran on the
    CPU), and the rewrite has a conv split's partial-sum ADD of the same shape nearer its place.
    Paired by place alone, the residual ADD took the partial sum, the next residual ADD the one
    before it, and the stage's convs were left a part with no original op (4.28M of the
    rewrite's 5.00M like-for-like cycles). What an op feeds (an ADD and a CPU op, not a RELU)
    and what its paired producers became pair both residual ADDs with theirs."""
    original = op_list([("QUANTIZE", ["x"], "q"), ("ADD", ["x", "q"], "a1"),
                        ("DEQUANTIZE", ["a1"], "d"), ("QUANTIZE", ["d"], "q2"),
                        ("ADD", ["q2", "a1"], "a2"), ("MEAN", ["a2"], "m")])
    rewritten = op_list([("CONV_2D", ["x", "w"], "c1"), ("CONV_2D", ["x", "w"], "c2"),
                         ("ADD", ["c1", "c2"], "t"), ("RELU", ["t"], "u"),
                         ("ADD", ["x", "u"], "r1"), ("CONV_2D", ["r1", "w"], "c3"),
                         ("ADD", ["c3", "r1"], "r2"), ("MEAN", ["r2"], "m")])
    a = [_placement(i, op) for i, op in enumerate(original["ops"])]
    b = [_placement(i, op) for i, op in enumerate(rewritten["ops"])]
    assert pair_ops(a, b) == {1: 2, 4: 6, 5: 7}                # by place: the partial sum
    assert pair_ops(a, b, original, rewritten) == {1: 4, 4: 6, 5: 7}
