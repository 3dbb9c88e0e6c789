"""``--vendor-check`` through a real subprocess: the vendor section, its exit codes, and the
one-line errors when a venv or the target's vendor compiler is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from convrewrite.vendors.probes import by_name

CLI = [sys.executable, "-m", "convrewrite.cli"]


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


@pytest.fixture()
def stride4(tmp_path) -> Path:
    path = tmp_path / "stride4.onnx"
    onnx.save(by_name("stride 4 pad 1").model(), path)
    return path


def test_missing_venvs_are_one_line_and_exit_5(stride4, tmp_path):
    out = tmp_path / "out.onnx"
    r = cli(stride4, "--target", "ethos-u55", "--vendor-check", "-o", out,
            env={"CONVREWRITE_VENDOR_DIR": str(tmp_path / "nowhere")})
    assert r.returncode == 5, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "python -m convrewrite.vendors.install" in r.stderr
    assert not out.exists()                 # it fails before any work


def test_a_target_without_a_vendor_compiler_is_bad_input(stride4):
    r = cli(stride4, "--target", "k210", "--vendor-check")
    assert r.returncode == 2 and "names no vendor compiler" in r.stderr


def test_vendor_out_needs_vendor_check(stride4, tmp_path):
    r = cli(stride4, "--target", "ethos-u55", "--vendor-out", tmp_path / "v")
    assert r.returncode == 2 and "--vendor-out needs --vendor-check" in r.stderr


def test_vendor_check_reports_before_and_after(stride4, tmp_path, needs_vendors):
    """The stride-4 conv behind a PAD that regor rejects; rewritten, every op is on the NPU."""
    out, report, keep = tmp_path / "out.onnx", tmp_path / "report.json", tmp_path / "vela"
    r = cli(stride4, "--target", "ethos-u55", "--vendor-check", "--vendor-out", keep,
            "-o", out, "--report", report)
    assert r.returncode == 0, r.stdout + r.stderr
    vendor = json.loads(report.read_text())["vendor"]
    assert vendor["passed"] and vendor["accelerator_config"] == "ethos-u55-128"
    original, rewritten = vendor["models"]["original"], vendor["models"]["rewritten"]
    assert original["regor"]["rejected"] == "Non-passthrough operation (Conv2D) could not run on NPU"
    assert original["legacy"]["cpu"]["convs"] == 1
    assert "Strides must fulfil" in original["legacy"]["cpu_ops"][0]["reason"]
    assert rewritten["regor"]["rejected"] is None and rewritten["regor"]["cpu"]["ops"] == 0
    assert rewritten["regor"]["npu"]["macs"] > 0
    assert rewritten["regor"]["inference_time_s"] > 0
    like = vendor["like_for_like"]
    assert like["regor"] is None                    # the original has no placement: rejected
    assert like["legacy"]["cpu_ops"] == original["legacy"]["cpu"]["ops"] >= 1
    assert like["legacy"]["cpu_macs"] == original["legacy"]["cpu"]["macs"] > 0
    assert like["legacy"]["cpu_ops_left"] == rewritten["legacy"]["cpu"]["ops"]
    assert like["legacy"]["cpu_part_rewritten_s"] > 0
    assert "REJECTED original/regor" in r.stdout and "vendor check: every conv on the NPU" in r.stdout
    assert "like for like (legacy): the rewrite" in r.stdout
    assert (keep / "rewritten" / "onnx2tf" / "model.tflite").is_file()
    assert list((keep / "rewritten" / "vela_regor").glob("*_vela.tflite"))
