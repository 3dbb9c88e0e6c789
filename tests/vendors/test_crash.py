"""Vela dying on a signal (regor SIGSEGVs on the original MobileViT-XXS TFLite) is a result, not an
exception: the judge says "vela crashed (signal 11)" for that core and the other core and the other
model go on. Runs without Vela: a fake ``vela`` that kills itself with SIGSEGV on the default core
(and "compiles" on the legacy one) is put where the judge looks for Vela (CONVREWRITE_VENDOR_DIR),
and the TFLite reading and onnx2tf steps are stand-ins."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path

import pytest

from convrewrite.models import deeplab_head
from convrewrite.report import _vendor_lines
from convrewrite.vendors import tflite as tflite_conversion
from convrewrite.vendors import vela

FAKE_VELA = """#!/bin/sh
# Fake Vela: the default core (regor) dies on SIGSEGV; the legacy core writes an output file.
case " $* " in *" --debug-force-legacy-core "*) ;; *) kill -SEGV $$ ;; esac
out=; prev=; last=
for a in "$@"; do [ "$prev" = "--output-dir" ] && out=$a; prev=$a; last=$a; done
: > "$out/$(basename "$last" .tflite)_vela.tflite"
"""

CONV = {"type": "CONV_2D", "inputs": [{"name": "x", "shape": [1, 8, 8, 4]},
                                      {"name": "w", "shape": [16, 3, 3, 4]}],
        "outputs": [{"name": "y", "shape": [1, 8, 8, 16]}], "options": {}}
OPS = {"ops": [CONV], "inputs": [], "outputs": []}
COMPILED = {"ops": [{"type": "CUSTOM:ethos-u", "inputs": [], "outputs": [
    {"name": "y", "shape": [1, 8, 8, 16]}], "options": {}}]}


@pytest.fixture()
def fake_vela(tmp_path, monkeypatch) -> Path:
    exe = tmp_path / "vendors" / "vela" / "bin" / "vela"
    exe.parent.mkdir(parents=True)
    exe.write_text(FAKE_VELA)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CONVREWRITE_VENDOR_DIR", str(tmp_path / "vendors"))
    # Vela's output flatbuffer: every op became an ethos-u custom op (all on the NPU).
    monkeypatch.setattr(vela, "read_ops",
                        lambda path: COMPILED if path.name.endswith("_vela.tflite") else OPS)
    return exe


def test_a_crash_is_a_result_naming_the_signal(fake_vela, tmp_path):
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"")
    r = vela.compile_tflite(tflite, "ethos-u55-128", "regor", tmp_path / "out", ops=OPS)
    assert r.crashed == "vela crashed (signal 11)" and r.rejected is None
    assert r.failure == r.crashed and not r.all_on_npu and not r.convs_on_npu
    assert r.counts()["cpu"]["convs"] == 1 and r.counts()["npu"]["ops"] == 0
    assert r.to_dict()["crashed"] == "vela crashed (signal 11)"
    assert r.summary() == "regor: vela crashed (signal 11)"
    legacy = vela.compile_tflite(tflite, "ethos-u55-128", "legacy", tmp_path / "out2", ops=OPS)
    assert legacy.crashed is None and legacy.all_on_npu


def _fake_conversion(jobs, timeout=None):
    made = []
    for job in jobs:
        job.work.mkdir(parents=True, exist_ok=True)
        job.tflite.write_bytes(b"")
        made.append(job.tflite)
    return made


def test_vendor_check_reports_the_crash_and_fails(fake_vela, tmp_path, monkeypatch):
    monkeypatch.setattr(tflite_conversion, "convert_many", _fake_conversion)
    model = deeplab_head(size=9)
    section = vela.vendor_check(model, None, "ethos-u55", out_dir=tmp_path / "check")
    regor, legacy = section["models"]["original"]["regor"], section["models"]["original"]["legacy"]
    assert regor["crashed"] == "vela crashed (signal 11)"
    assert legacy["crashed"] is None and legacy["cpu"]["ops"] == 0
    assert section["passed"] is False
    lines = "\n".join(_vendor_lines(section))
    assert "CRASHED original/regor: vela crashed (signal 11)" in lines


def _benchmark():
    path = Path(__file__).parents[2] / "benchmarks" / "vendor_placement.py"
    spec = importlib.util.spec_from_file_location("vendor_placement", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_records_the_crash_per_core_and_goes_on(fake_vela, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.setattr(tflite_conversion, "convert_many", _fake_conversion)
    bench = _benchmark()
    target = bench.cr.load_target("ethos-u55")
    rows = [bench.judge_model(name, deeplab_head(size=9), target, tmp_path / name)
            for name in ("first", "second")]
    for row in rows:
        assert row["error"] is None
        assert row["cores"]["regor"]["before"] == {"failed": "vela crashed (signal 11)"}
        assert row["cores"]["regor"]["after"] == {"failed": "vela crashed (signal 11)"}
        assert row["cores"]["legacy"]["after"]["cpu_ops"] == 0
    bench.print_table(rows, target)
    table = capsys.readouterr().out
    assert table.count("| vela crashed (signal 11) | vela crashed (signal 11) | - |") == 2
    assert "| first | legacy |" in table and "| second | legacy |" in table


SLOW_VELA = """#!/bin/sh
# Fake Vela: the legacy core runs past any short timeout; the default core "compiles".
case " $* " in *" --debug-force-legacy-core "*) exec sleep 30 ;; esac
out=; prev=; last=
for a in "$@"; do [ "$prev" = "--output-dir" ] && out=$a; prev=$a; last=$a; done
: > "$out/$(basename "$last" .tflite)_vela.tflite"
"""


def test_a_timeout_is_that_cells_result_and_the_row_goes_on(fake_vela, tmp_path, monkeypatch,
                                                            capsys):
    # The legacy core ran past 900 s on DeepLabV3-MobileNetV3 (256x256) and the exception lost
    # the whole benchmark row, regor's finished compile with it.
    fake_vela.write_text(SLOW_VELA)
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"")
    r = vela.compile_tflite(tflite, "ethos-u55-128", "legacy", tmp_path / "out", ops=OPS,
                            timeout=0.5)
    assert r.crashed == "vela did not finish in 0 s"
    assert not r.convs_on_npu and r.counts()["cpu"]["convs"] == 1
    monkeypatch.setattr(tflite_conversion, "convert_many", _fake_conversion)
    bench = _benchmark()
    target = bench.cr.load_target("ethos-u55")
    row = bench.judge_model("slow", deeplab_head(size=9), target, tmp_path / "slow",
                            vela_timeout=1)
    assert row["error"] is None
    assert row["cores"]["regor"]["before"]["cpu_ops"] == 0
    assert row["cores"]["legacy"]["before"] == {"failed": "vela did not finish in 1 s"}
    bench.print_table([row], target)
    assert "| slow | legacy |" in capsys.readouterr().out
