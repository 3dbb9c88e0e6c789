"""An int8 QDQ model as onnxruntime's own quantizer writes it (per-channel weights, quantized
activations around every conv), rewritten and verified under the model's ONNX semantics."""

from __future__ import annotations

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)

import convrewrite as cr
from convrewrite.models import resnet18
from tests.conv_cases import op_count


class RandomImages(CalibrationDataReader):
    def __init__(self, count: int = 3):
        self.left = count

    def get_next(self):
        if not self.left:
            return None
        self.left -= 1
        rng = np.random.default_rng(self.left)
        return {"input": rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)}


def test_qdq_resnet18(tmp_path):
    float_path, q_path = tmp_path / "r18.onnx", tmp_path / "r18.qdq.onnx"
    onnx.save(resnet18(image_size=32), float_path)
    quantize_static(str(float_path), str(q_path), RandomImages(), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8)
    model = onnx.load(q_path)
    assert op_count(model, "QuantizeLinear") > 20
    out, report = cr.rewrite(q_path, {"name": "npu128", "conv": {"max_in_channels": 128,
                                                                 "max_out_channels": 128}})
    assert report.status == "ok", report.render()
    assert report.end_to_end["onnxruntime_optimization"] == "basic"
    # every conv's weight, split or not, is still int8 behind a DequantizeLinear
    producers = {o: n for n in out.graph.node for o in n.output}
    int8 = {t.name for t in out.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    for conv in (n for n in out.graph.node if n.op_type == "Conv"):
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and dq.input[0] in int8
    assert op_count(out, "Conv") > op_count(model, "Conv")
    assert all(r.verify["passed"] for r in report.records)


def test_qdq_tidied_model_runs_in_the_checks_run(tmp_path, monkeypatch):
    """A model compared at onnxruntime's basic level: the tidied model runs in the local checks'
    session (folded beside the original and every record's piece), so verification makes three
    sessions (the checks', the noise floor's, the load check at the full level), not four; the
    verdict is the same."""
    import importlib
    import traceback
    from convrewrite import pipeline
    verify = importlib.import_module("convrewrite.verify")
    float_path, q_path = tmp_path / "r18.onnx", tmp_path / "r18.qdq.onnx"
    onnx.save(resnet18(image_size=32), float_path)
    quantize_static(str(float_path), str(q_path), RandomImages(), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8)
    made, tidied = [], []
    session, tidy = verify.session, pipeline._tidy

    def counted(m, level=None):
        names = [f.name for f in traceback.extract_stack()]
        if "run_pipeline" in names and "run_rewrites" not in names:
            made.append(level)
        return session(m, level)

    def counted_tidy(m, *args):
        out = tidy(m, *args)
        tidied.append(out is not m)
        return out
    monkeypatch.setattr(verify, "session", counted)
    monkeypatch.setattr(pipeline, "_tidy", counted_tidy)
    _, report = cr.rewrite(q_path, {"name": "npu128", "conv": {"max_in_channels": 128,
                                                               "max_out_channels": 128}})
    assert report.status == "ok" and report.end_to_end["passed"] and tidied == [True]
    assert report.end_to_end["onnxruntime_optimization"] == "basic"
    assert made == [None, "disable", "all"]
