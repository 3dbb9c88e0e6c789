"""Weights computed from constants through the command line (issue 14 item 8): a hand-built
ConstantOfShape conv and the onnx package's "light" model-zoo nets whose every weight is a
ConstantOfShape were exit 3 on k210 ("the weight is not a constant"); folded, they rewrite, verify
end to end against the original, and the input file is left as it was."""

from __future__ import annotations

import json

import onnx
import pytest

from tests.conv_cases import computed_weight_model

from .model_cases import run_cli
from .onnx_backend_sweep import DATA, Case, run_case


def test_cli_folds_a_constant_of_shape_weight(tmp_path):
    got = run_cli(tmp_path, computed_weight_model("constant_of_shape"), "k210",
                  "--report", str(tmp_path / "r.json"))
    assert got.code == 0, got.stderr
    assert got.written and got.input_unchanged
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rewrites"] and report["end_to_end"]["passed"]
    assert any(n.startswith("folded 2 conv weight/bias tensor(s)") for n in report["notes"])
    out = onnx.load(str(got.output))
    onnx.checker.check_model(out, full_check=True)
    assert "ConstantOfShape" not in {n.op_type for n in out.graph.node}


@pytest.mark.parametrize("net", ["bvlc_alexnet", "zfnet512"])
def test_light_nets_with_constant_of_shape_weights_rewrite_on_k210(net):
    path = DATA / "light" / f"light_{net}.onnx"
    if not path.is_file():
        pytest.skip(f"this onnx does not ship {path.name}")
    outcome = run_case(Case(f"light/{net}", path), "k210")
    assert outcome.code == 0, outcome.stderr
    assert not outcome.modified_input
