"""Channel split on tiny hand-built graphs: structure, legality of the result, and numbers on
onnxruntime checked here independently of convrewrite's own verifier."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import convrewrite as cr
from tests.conv_cases import conv_model, op_count, random_input, run


def limits(max_in=None, max_out=None, align=1, **rewrite):
    target = {"name": "test", "conv": {"max_in_channels": max_in, "max_out_channels": max_out,
                                       "channel_align": align}}
    if rewrite:
        target["rewrite"] = rewrite
    return target


def split_and_compare(model, target, *, batch=1, atol=2e-5, rtol=1e-4):
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    assert report.records, "expected a rewrite"
    onnx.checker.check_model(out, full_check=True)
    assert not cr.check(out, target).remaining
    feeds = random_input(model, batch=batch)
    ref, got = run(model, feeds)[0], run(out, feeds)[0]
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, atol=atol * scale, rtol=rtol)
    return out, report


def test_in_channel_split_is_split_convs_and_adds():
    model = conv_model(cin=64, cout=16)
    out, report = split_and_compare(model, limits(max_in=16))
    assert op_count(out, "Conv") == 4 and op_count(out, "Add") == 3
    assert op_count(out, "Split") == 1 and op_count(out, "Concat") == 0
    assert report.records[0].tolerance == "reassociating"
    # the bias is added once: exactly one sub-conv carries it
    assert sum(len(n.input) == 3 for n in out.graph.node if n.op_type == "Conv") == 1


def test_out_channel_split_is_exact_concat():
    model = conv_model(cin=8, cout=40)
    out, report = split_and_compare(model, limits(max_out=16, align=8))
    assert op_count(out, "Conv") == 3 and op_count(out, "Concat") == 1
    assert op_count(out, "Add") == 0 and op_count(out, "Split") == 0
    record = report.records[0]
    assert record.tolerance == "exact"
    assert record.verify["passed"] and record.verify["max_abs"] == 0.0


def test_grid_split_both_limits():
    out, _ = split_and_compare(conv_model(cin=48, cout=40), limits(max_in=16, max_out=16))
    assert op_count(out, "Conv") == 9


@pytest.mark.parametrize("accumulate", ["chain", "tree"])
def test_accumulation_forms(accumulate):
    out, report = split_and_compare(conv_model(cin=80, cout=8),
                                    limits(max_in=16, accumulate=accumulate))
    adds = [n for n in out.graph.node if n.op_type == "Add"]
    assert len(adds) == 4
    conv_outputs = {n.output[0] for n in out.graph.node if n.op_type == "Conv"}
    both_partial = [a for a in adds if all(i not in conv_outputs for i in a.input)]
    if accumulate == "chain":       # every Add has a conv operand: fusable into the conv
        assert not both_partial
    else:                           # a tree adds partial sums together
        assert both_partial


def test_slice_input_form():
    out, _ = split_and_compare(conv_model(cin=48, cout=8), limits(max_in=16, input_split="slice"))
    assert op_count(out, "Slice") == 3 and op_count(out, "Split") == 0


@pytest.mark.parametrize("cin,cout,groups,max_in,max_out,expect_convs", [
    (32, 32, 4, 16, 16, 2),        # two groups per chunk
    (32, 64, 2, 8, 64, 4),         # a single group too wide on inputs: split within each group
    (64, 64, 64, 16, 16, 4),       # depthwise: channel chunks
    (16, 48, 16, 8, 8, 8),         # depthwise multiplier 3: 2 groups (6 outputs) per chunk
    (24, 24, 3, 16, 16, 2),        # 3 groups of 8 channels: chunks of 2 + 1 groups
])
def test_grouped_and_depthwise(cin, cout, groups, max_in, max_out, expect_convs):
    out, _ = split_and_compare(conv_model(cin=cin, cout=cout, groups=groups),
                               limits(max_in=max_in, max_out=max_out))
    assert op_count(out, "Conv") == expect_convs


@pytest.mark.parametrize("kernel,spatial", [((3,), (20,)), ((3, 3), (9, 7)), ((3, 3, 3), (5, 6, 4))])
def test_ranks(kernel, spatial):
    split_and_compare(conv_model(cin=32, cout=24, kernel=kernel, spatial=spatial),
                      limits(max_in=8, max_out=16))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad_modes(auto_pad):
    split_and_compare(conv_model(cin=32, cout=8, auto_pad=auto_pad, strides=(2, 2),
                                 spatial=(9, 9)), limits(max_in=8))


def test_strided_dilated_padded():
    split_and_compare(conv_model(cin=32, cout=32, strides=(2, 1), dilations=(2, 2),
                                 pads=(2, 1, 0, 3), spatial=(13, 11)), limits(max_in=8, max_out=8))


@pytest.mark.parametrize("form", ["constant", "qdq_tensor", "qdq_channel"])
def test_weight_forms(form):
    out, _ = split_and_compare(conv_model(cin=32, cout=32, weight_form=form),
                               limits(max_in=16, max_out=16))
    if form.startswith("qdq"):
        # quantisation survives: every sub-conv's weight is a DequantizeLinear of int8
        dq = [n for n in out.graph.node if n.op_type == "DequantizeLinear"]
        assert len(dq) == op_count(out, "Conv")
        inits = {t.name: t for t in out.graph.initializer}
        assert all(inits[n.input[0]].data_type == onnx.TensorProto.INT8 for n in dq)


def test_float16():
    split_and_compare(conv_model(cin=64, cout=24, dtype=np.float16), limits(max_in=16, max_out=16),
                      atol=2e-3, rtol=2e-3)


def test_dynamic_batch():
    model = conv_model(cin=32, cout=8, batch="N")
    split_and_compare(model, limits(max_in=8), batch=3)


def test_old_opset_uses_split_attribute():
    out, _ = split_and_compare(conv_model(cin=32, cout=8, opset=11), limits(max_in=8))
    split = next(n for n in out.graph.node if n.op_type == "Split")
    assert len(split.input) == 1 and split.attribute[0].name in ("axis", "split")


def test_conv_transpose_split():
    model = conv_model(op="ConvTranspose", cin=32, cout=24, strides=(2, 2), pads=(1, 1, 1, 1),
                       output_padding=(1, 1), kernel=(3, 3))
    split_and_compare(model, limits(max_in=8, max_out=16))


def test_grouped_conv_transpose_split():
    model = conv_model(op="ConvTranspose", cin=32, cout=16, groups=4, strides=(2, 2))
    split_and_compare(model, limits(max_in=16, max_out=8))


def test_alignment_and_balance():
    out, report = split_and_compare(conv_model(cin=8, cout=600, kernel=(1, 1)),
                                    limits(max_out=256, align=8))
    widths = sorted(int(onnx.numpy_helper.to_array(t).shape[0]) for t in out.graph.initializer
                    if t.name.endswith(".w"))
    assert widths == [200, 200, 200]


def test_derived_names_are_readable():
    out, _ = split_and_compare(conv_model(cin=32, cout=32), limits(max_in=16, max_out=16))
    names = [n.name for n in out.graph.node if n.op_type == "Conv"]
    assert names == ["conv/conv.o0.i0", "conv/conv.o0.i1", "conv/conv.o1.i0", "conv/conv.o1.i1"]


def test_legal_model_is_untouched():
    model = conv_model(cin=8, cout=8)
    out, report = cr.rewrite(model, limits(max_in=16, max_out=16))
    assert out is model and not report.records and report.status == "ok"


def test_deterministic_bytes():
    target = limits(max_in=16, max_out=16, align=4)
    a, _ = cr.rewrite(conv_model(cin=48, cout=40), target)
    b, _ = cr.rewrite(conv_model(cin=48, cout=40), target)
    assert a.SerializeToString() == b.SerializeToString()


def test_idempotent_on_rewritten_model():
    target = limits(max_in=16, max_out=16)
    once, _ = cr.rewrite(conv_model(cin=48, cout=40), target)
    twice, report = cr.rewrite(once, target)
    assert twice is once and not report.records


def test_keeps_opset_ir_version_and_metadata():
    model = conv_model(cin=32, cout=8, opset=13)
    model.ir_version = 7
    onnx.helper.set_model_props(model, {"author": "me"})
    model.producer_name = "exporter"
    out, _ = cr.rewrite(model, limits(max_in=8))
    assert out.ir_version == 7 and out.opset_import[0].version == 13
    assert out.producer_name == "exporter"
    assert {p.key: p.value for p in out.metadata_props} == {"author": "me"}
