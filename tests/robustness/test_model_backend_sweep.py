"""A small fixed subset of the onnx backend sweep (onnx_backend_sweep.py) in CI: no exit 4, the
input untouched, and the rewritten model still reproduces the outputs shipped with the case."""

from __future__ import annotations

import pytest

from .onnx_backend_sweep import DATA, Case, run_case

SUBSET = ["pytorch-converted/test_Conv2d_dilated",
          "pytorch-converted/test_Conv2d_depthwise_with_multiplier",
          "pytorch-converted/test_Conv1d_groups",
          "pytorch-converted/test_Conv3d_stride_padding",
          "pytorch-converted/test_ConvTranspose2d",
          "pytorch-operator/test_operator_conv"]
PRESETS = ["k210", "ethos-u55", "nvdla"]


def _case(name: str) -> Case:
    folder = DATA / name
    if not (folder / "model.onnx").is_file():
        pytest.skip(f"this onnx does not ship {name}")
    return Case(name, folder / "model.onnx", sorted(folder.glob("test_data_set_*")))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", SUBSET)
def test_shipped_case(name, preset):
    outcome = run_case(_case(name), preset)
    assert outcome.code in (0, 3), outcome.stderr
    assert not outcome.modified_input
    assert outcome.shipped in ("ok", "baseline"), outcome
