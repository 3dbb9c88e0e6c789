"""A model onnx2tf writes no int8 TFLite for (GELU's Erf became FlexErf, which int8 calibration
cannot run; onnx2tf only warns and exits 0) is a result of its own: "no int8 TFLite: <onnx2tf's
reason>" on every core of that side, the other side still judged, the verdict failed and the CLI's
exit 6 -- never a pass. The first tests run without the venvs: a fake onnx2tf (its driver replaced,
writing the log a real onnx2tf 2.6.9 run wrote) and a fake Vela. The last runs the real tools:
the same Erf model converts (onnx2tf's -rtpo erf) and its convs run on the NPU, and without that
flag the real onnx2tf's failure is reported in its own words."""

from __future__ import annotations

import importlib.util
import stat
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convrewrite.report import Report, _vendor_lines
from convrewrite.vendors import tflite as tflite_conversion
from convrewrite.vendors import vela

# The end of a real onnx2tf 2.6.9 log (-v warn) for a Conv -> GELU (Erf) -> Conv model without
# -rtpo erf: the int8 step failed, onnx2tf warned, and exited 0.
REAL_LOG_TAIL = """\
Saved artifact at 'tf'. The following endpoints are available:
Traceback (most recent call last):
  File ".../tensorflow/lite/python/optimize/calibrator.py", line 143, in _feed_tensors
    self._calibrator.Prepare([list(s.shape) for s in input_array])
RuntimeError: Select TensorFlow op(s), included in the given model, is(are) not supported by \
this interpreter. Make sure you apply/link the Flex delegate before inference. For the Android, \
it can be resolved by adding "org.tensorflow:tensorflow-lite-select-tf-ops" dependency. See \
instructions: https://www.tensorflow.org/lite/guide/ops_selectNode number 2 (FlexErf) failed to \
prepare.

\x1b[33mWARNING:\x1b[0m Full INT8 Quantization tflite output failed.
\x1b[33mWARNING:\x1b[0m INT8 Quantization with int16 activations tflite output failed.
"""
REASON = ("no int8 TFLite: onnx2tf's int8 quantization failed: TensorFlow op(s) with no TFLite "
          "builtin (FlexErf), which calibration cannot run")

# A fake onnx2tf driver: for each job, a model with an Erf gets the real failing log and no int8
# file (exit 0, as onnx2tf does); any other model gets its int8 file.
FAKE_DRIVER = f"""
import json, os, sys
import onnx
LOG = {REAL_LOG_TAIL!r}
for index, job in enumerate(json.load(sys.stdin)):
    os.makedirs(os.path.join(job["cwd"], "tf"), exist_ok=True)
    model = onnx.load(os.path.join(job["cwd"], "model.onnx"))
    erf = any(n.op_type == "Erf" for n in model.graph.node)
    with open(os.path.join(job["cwd"], "onnx2tf.log"), "w") as f:
        f.write(LOG if erf else "Saved artifact at 'tf'.\\n")
    open(os.path.join(job["cwd"], "tf", "model_float32.tflite"), "wb").close()
    if not erf:
        open(os.path.join(job["cwd"], "tf", "model_full_integer_quant.tflite"), "wb").close()
    print(json.dumps({{"index": index, "exit_code": 0, "seconds": 0.0}}), flush=True)
"""

FAKE_VELA = """#!/bin/sh
# Fake Vela: every compile writes its output file (all on the NPU, as read_ops says below).
out=; prev=; last=
for a in "$@"; do [ "$prev" = "--output-dir" ] && out=$a; prev=$a; last=$a; done
: > "$out/$(basename "$last" .tflite)_vela.tflite"
"""

CONV = {"type": "CONV_2D", "inputs": [{"name": "x", "shape": [1, 16, 16, 8]},
                                      {"name": "w", "shape": [8, 3, 3, 8]}],
        "outputs": [{"name": "y", "shape": [1, 16, 16, 8]}], "options": {}}
OPS = {"ops": [CONV], "inputs": [], "outputs": []}
COMPILED = {"ops": [{"type": "CUSTOM:ethos-u", "inputs": [], "outputs": [
    {"name": "y", "shape": [1, 16, 16, 8]}], "options": {}}]}


def conv_gelu(erf: bool = True, size: int = 16) -> onnx.ModelProto:
    """Conv -> GELU as torch exports it (Div, Erf, Add, Mul, Mul) -> 1x1 Conv; without ``erf`` a
    Relu stands in for the GELU."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2,
                                     "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 16, 1, 1)).astype(np.float32) * 0.2,
                                     "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1])]
    if erf:
        inits += [numpy_helper.from_array(np.array(v, np.float32), n)
                  for n, v in (("sqrt2", 2 ** 0.5), ("one", 1.0), ("half", 0.5))]
        nodes += [helper.make_node("Div", ["a", "sqrt2"], ["d"]),
                  helper.make_node("Erf", ["d"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["f"]),
                  helper.make_node("Mul", ["a", "f"], ["g"]),
                  helper.make_node("Mul", ["g", "half"], ["b"])]
    else:
        nodes.append(helper.make_node("Relu", ["a"], ["b"]))
    nodes.append(helper.make_node("Conv", ["b", "w2"], ["y"]))
    graph = helper.make_graph(
        nodes, "conv_gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           [1, 8, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, size, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture()
def fake_tools(tmp_path, monkeypatch):
    vendors = tmp_path / "vendors"
    exe = vendors / "vela" / "bin" / "vela"
    exe.parent.mkdir(parents=True)
    exe.write_text(FAKE_VELA)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    onnx2tf = vendors / "onnx2tf" / "bin"
    onnx2tf.mkdir(parents=True)
    (onnx2tf / "onnx2tf").write_text("#!/bin/sh\nexit 1\n")
    (onnx2tf / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (onnx2tf / "python").chmod(0o755)
    driver = tmp_path / "fake_driver.py"
    driver.write_text(FAKE_DRIVER)
    monkeypatch.setenv("CONVREWRITE_VENDOR_DIR", str(vendors))
    monkeypatch.setattr(tflite_conversion, "DRIVER", driver)
    monkeypatch.setattr(vela, "read_ops",
                        lambda path: COMPILED if path.name.endswith("_vela.tflite") else OPS)


def test_the_reason_is_onnx2tfs_own_words():
    assert tflite_conversion.no_tflite_reason(REAL_LOG_TAIL, 0) == REASON[len("no int8 TFLite: "):]
    assert tflite_conversion.no_tflite_reason("Saved artifact at 'tf'.\n", 0).startswith(
        "onnx2tf exited 0 without writing model_full_integer_quant.tflite")
    assert tflite_conversion.no_tflite_reason("ValueError: bad shape\n", 1) == \
        "onnx2tf failed (exit 1): ValueError: bad shape"


def test_an_unconverted_original_is_its_result_and_the_rewrite_is_judged(fake_tools, tmp_path):
    section = vela.vendor_check(conv_gelu(), conv_gelu(erf=False), "ethos-u55",
                                out_dir=tmp_path / "check")
    for core in ("regor", "legacy"):
        before = section["models"]["original"][core]
        assert before["no_tflite"].startswith(REASON) and "onnx2tf.log" in before["no_tflite"]
        assert before["npu"]["ops"] == 0 and before["cpu_ops"] == []
        after = section["models"]["rewritten"][core]
        assert after["no_tflite"] is None and after["npu"]["convs"] == 1
    assert section["passed"] is True and section["failed"] is None
    lines = "\n".join(_vendor_lines(section))
    assert f"NO TFLITE original/regor: {REASON}" in lines


def test_an_unconverted_result_fails_the_check_with_exit_6(fake_tools, tmp_path):
    section = vela.vendor_check(conv_gelu(), None, "ethos-u55", out_dir=tmp_path / "check")
    assert section["passed"] is False and section["failed"].startswith(REASON)
    report = Report(vendor=section)
    assert report.status == "unjudged" and report.exit_code == 6
    text = report.render()
    assert f"vendor check: NOT JUDGED: {REASON}" in text
    assert "status: the vendor compiler could not judge the result" in text


def test_only_the_cores_asked_for_are_compiled(fake_tools, tmp_path):
    section = vela.vendor_check(conv_gelu(erf=False), None, "ethos-u55", cores=("regor",),
                                out_dir=tmp_path / "check")
    assert list(section["models"]["original"]) == ["regor"] and section["passed"]


def _benchmark():
    path = Path(__file__).parents[2] / "benchmarks" / "vendor_placement.py"
    spec = importlib.util.spec_from_file_location("vendor_placement", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_cell_says_no_int8_tflite(fake_tools, tmp_path, capsys):
    bench = _benchmark()
    target = bench.cr.load_target("ethos-u55")
    row = bench.judge_model("gelu", conv_gelu(), target, tmp_path / "gelu", cores=("regor",))
    assert row["error"] is None
    assert row["cores"]["regor"]["before"]["failed"].startswith(REASON)
    assert row["cores"]["regor"]["after"]["failed"].startswith(REASON)
    bench.print_table([row], target)
    assert f"| gelu | regor | 0 (ok) | {REASON}" in capsys.readouterr().out


@pytest.mark.vendor_full          # a second whole-chain run (~40 s): CI's subset has the CLI's
def test_erf_converts_and_runs_on_the_npu(tmp_path, needs_vendors, monkeypatch):
    """Real onnx2tf and Vela: GELU's Erf converts to int8 (onnx2tf's elementwise pseudo-Erf) and
    both convs run on the NPU; with onnx2tf's default Erf the same model has no int8 TFLite, and
    the judge says so in onnx2tf's words."""
    model = conv_gelu()
    samples = vela.calibration_samples(model, None, 0, None)
    prepare = tflite_conversion.Job.prepare

    def without_rtpo(job):
        args = prepare(job)
        if job.work.name == "default_erf":
            i = args.index("-rtpo")
            del args[i:i + 2]
        return args

    monkeypatch.setattr(tflite_conversion.Job, "prepare", without_rtpo)
    jobs = [tflite_conversion.Job(model, samples, tmp_path / name)
            for name in ("pseudo_erf", "default_erf")]
    made, failed = tflite_conversion.convert_many(jobs)
    assert isinstance(failed, tflite_conversion.VendorFailed)
    assert str(failed).startswith(REASON)
    assert isinstance(made, Path) and made.is_file()
    ops = vela.read_ops(made)
    assert "CUSTOM" not in {op["type"].split(":")[0] for op in ops["ops"]}   # no Flex op
    result = vela.compile_tflite(made, "ethos-u55-128", "regor", tmp_path / "vela", ops=ops)
    assert result.failure is None and result.convs_on_npu
    assert result.counts()["npu"]["convs"] == 2


def test_a_second_run_into_the_same_folder_converts_only_what_changed(fake_tools, tmp_path,
                                                                     monkeypatch):
    """A TFLite made from the same model, calibration data and flags is reused (job.sha256); a
    model whose calibration changed is converted again."""
    model = conv_gelu(erf=False)
    jobs = [tflite_conversion.Job(model, vela.calibration_samples(model, None, s, None),
                                  tmp_path / f"job{s}") for s in (0, 1)]
    assert all(isinstance(x, Path) for x in tflite_conversion.convert_many(jobs))
    broken = tmp_path / "broken_driver.py"
    broken.write_text("import sys; sys.exit(3)\n")
    monkeypatch.setattr(tflite_conversion, "DRIVER", broken)      # onnx2tf must not run now
    assert tflite_conversion.convert_many(jobs) == [j.tflite for j in jobs]
    again = [jobs[0], tflite_conversion.Job(model, vela.calibration_samples(model, None, 7, None),
                                            jobs[1].work)]
    made = tflite_conversion.convert_many(again)
    assert made[0] == jobs[0].tflite
    assert isinstance(made[1], tflite_conversion.VendorFailed)
