"""Models exported by PyTorch itself (TorchScript and dynamo exporters; see
exports/export_torchvision.py), rewritten for every preset through the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXPORTS = Path(__file__).parent / "exports"
NAMES = ["shufflenet_v2.ts.onnx", "mobilenet_v3_small.dynamo.onnx", "dcgan.ts.onnx",
         "net1d.ts.onnx", "net3d.dynamo.onnx"]
PRESETS = ["k210", "nvdla", "ethos-u55", "generic"]
# every export comes out fully legal on every preset (checked by hand on more in /tmp runs:
# ResNet-18, RegNet, ResNeXt-50, ConvNeXt, DeepLabV3, both exporters each)
FULLY_LEGAL = {(name, preset) for name in NAMES for preset in PRESETS}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", NAMES)
def test_export_for_preset(name, preset, tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "convrewrite.cli", str(EXPORTS / name), "--target",
                        preset, "-o", str(out), "--report", str(report), "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 3), r.stdout + r.stderr      # never a mismatch or a crash
    data = json.loads(report.read_text())
    if (name, preset) in FULLY_LEGAL:
        assert r.returncode == 0, json.dumps(data["remaining"], indent=1)[:2000]
    for remaining in data["remaining"]:
        assert remaining["reasons"]
    if data["rewrites"]:
        assert data["end_to_end"]["passed"]
        assert out.exists()
