"""The command line through a real subprocess: exit codes, one-line errors, nothing written on
failure, the input never touched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conv_cases import conv_model

CLI = [sys.executable, "-m", "convrewrite.cli"]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def wide(tmp_path) -> Path:
    path = tmp_path / "wide.onnx"
    onnx.save(conv_model(cin=64, cout=48, spatial=(6, 6), pads=(1, 1, 1, 1)), path)
    return path


@pytest.fixture()
def small_target(tmp_path) -> Path:
    path = tmp_path / "chip.yaml"
    path.write_text("name: chip\nconv:\n  max_in_channels: 16\n  max_out_channels: 32\n")
    return path


def test_rewrite_verify_and_report(wide, small_target, tmp_path):
    before = digest(wide)
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    r = cli(wide, "--target", small_target, "-o", out, "--report", report)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "max_in_channels 64>16" in r.stdout and "end to end" in r.stdout
    assert digest(wide) == before
    data = json.loads(report.read_text())
    assert data["status"] == "ok" and data["rewrites"][0]["verify"]["passed"]
    assert data["end_to_end"]["passed"] and data["output"] == str(out)
    onnx.checker.check_model(onnx.load(out))
    again = tmp_path / "again.onnx"
    assert cli(wide, "--target", small_target, "-o", again).returncode == 0
    assert digest(again) == digest(out)                     # deterministic


def test_default_output_name(wide, small_target):
    r = cli(wide, "--target", small_target)
    assert r.returncode == 0, r.stderr
    assert (wide.parent / "wide.chip.onnx").exists()


def test_already_legal_model_is_copied_byte_for_byte(tmp_path):
    path = tmp_path / "ok.onnx"
    onnx.save(conv_model(cin=8, cout=8), path)
    out = tmp_path / "ok.out.onnx"
    r = cli(path, "--target", "generic", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "nothing rewritten" in r.stdout
    assert out.read_bytes() == path.read_bytes()


def test_check_only_exit_3_and_writes_nothing(wide, tmp_path):
    before = set(tmp_path.iterdir())
    r = cli(wide, "--target", "k210", "--check-only")
    assert r.returncode == 0            # 64 -> 48 channels, 3x3 pad 1: fits the K210
    r = cli(wide, "--target", "generic", "--check-only")
    assert r.returncode == 0
    r = cli(wide, "--target", "ethos-u55", "--check-only")
    assert r.returncode == 0
    path = tmp_path / "deep.onnx"
    onnx.save(conv_model(cin=2048, cout=8, kernel=(5, 5), spatial=(6, 6)), path)
    r = cli(path, "--target", "k210", "--check-only")
    assert r.returncode == 3
    assert "kernel must be one of 1x1, 3x3" in r.stdout
    assert "channel_split would rewrite it" in r.stdout
    assert set(tmp_path.iterdir()) == before | {path}


def _graph_input_weight_model(path, cin: int, op: str = "Conv", **attrs):
    from onnx import helper
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"], name="conv", kernel_shape=[1, 1], **attrs)],
        "g", [helper.make_tensor_value_info("x", 1, [1, cin, 6, 6]),
              helper.make_tensor_value_info("w", 1, [cin, 8, 1, 1] if op == "ConvTranspose"
                                            else [8, cin, 1, 1])],
        [helper.make_tensor_value_info("y", 1, None)])
    onnx.save(onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), path)


def test_a_graph_input_weight_is_split_in_the_graph(tmp_path):
    """A 2048-channel conv whose weight is a graph input: its channels are cut by Slices of the
    weight itself, and the rewrite is verified fed that weight."""
    path = tmp_path / "dynamic_weight.onnx"
    _graph_input_weight_model(path, 2048)
    r = cli(path, "--target", "k210", "-o", tmp_path / "out.onnx")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 in x 1 out chunks" in r.stdout


def test_remaining_illegal_conv_exit_3(tmp_path):
    """A ConvTranspose whose weight is a graph input, on nvdla (no ConvTranspose, no Slice): as
    convs its weight needs another layout, laid out in the graph by ops nvdla lacks. On k210 the
    same model is rewritten (its weight laid out by Transpose and reversed Slices)."""
    path = tmp_path / "dynamic_weight.onnx"
    _graph_input_weight_model(path, 8, "ConvTranspose", strides=[2, 2])
    r = cli(path, "--target", "nvdla", "-o", tmp_path / "out.onnx")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "NOT LEGAL conv" in r.stdout and "lacks Slice" in r.stdout
    r = cli(path, "--target", "k210", "-o", tmp_path / "k210.onnx")
    assert r.returncode == 0 and "status: ok" in r.stdout, r.stdout + r.stderr


def test_list_targets_and_rules():
    r = cli("--list-targets")
    assert r.returncode == 0
    for name in ("k210", "ethos-u55", "nvdla", "generic"):
        assert name in r.stdout
    r = cli("--list-rules")
    assert r.returncode == 0 and "conv.max_in_channels" in r.stdout


def test_verify_subcommand(wide, small_target, tmp_path):
    out = tmp_path / "out.onnx"
    assert cli(wide, "--target", small_target, "-o", out).returncode == 0
    r = cli("verify", wide, out)
    assert r.returncode == 0, r.stdout + r.stderr
    other = tmp_path / "other.onnx"
    onnx.save(conv_model(cin=64, cout=48, spatial=(6, 6), pads=(1, 1, 1, 1), seed=5), other)
    r = cli("verify", wide, other, "--report", tmp_path / "v.json")
    assert r.returncode == 1
    assert "FAIL" in r.stdout
    assert json.loads((tmp_path / "v.json").read_text())["status"] == "mismatch"


def test_real_inputs_from_npz(wide, small_target, tmp_path):
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.ones((1, 64, 6, 6), np.float32))
    r = cli(wide, "--target", small_target, "-o", tmp_path / "o.onnx", "--inputs", npz,
            "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["inputs"]["x"]["shape"] == [1, 64, 6, 6]
    np.savez(npz, y=np.ones((1, 64, 6, 6), np.float32))
    r = cli(wide, "--target", small_target, "-o", tmp_path / "o2.onnx", "--inputs", npz)
    assert r.returncode == 2 and "no array for model input 'x'" in r.stderr
    assert not (tmp_path / "o2.onnx").exists()


def test_mismatch_exits_1_and_writes_no_model(wide, small_target, tmp_path):
    out = tmp_path / "o.onnx"
    r = cli(wide, "--target", small_target, "-o", out, "--atol", "0", "--rtol", "0",
            "--seed", "1")
    # An input-channel split regroups float sums: with zero tolerance it must fail, loudly.
    assert r.returncode == 1, r.stdout
    assert "FAIL" in r.stdout and not out.exists()


def one_line_error(r: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("convrewrite: error:")
    for needle in needles:
        assert needle in lines[0]


def test_bad_inputs(tmp_path, wide, small_target):
    before = digest(wide)
    listing = lambda: sorted(p.name for p in tmp_path.iterdir())  # noqa: E731
    names = listing()
    one_line_error(cli(tmp_path / "missing.onnx", "--target", "k210"), 2, "no such file")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model")
    one_line_error(cli(garbage, "--target", "k210"), 2, "not an ONNX model")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(wide.read_bytes()[:200])
    one_line_error(cli(truncated, "--target", "k210"), 2, "truncated.onnx")
    broken = conv_model(cin=8, cout=8)
    broken.graph.node[-1].input[1] = "does_not_exist"
    bad = tmp_path / "bad_checker.onnx"
    onnx.save(broken, bad)
    one_line_error(cli(bad, "--target", "k210"), 2, "invalid ONNX model")
    yaml_bad = tmp_path / "bad.yaml"
    yaml_bad.write_text("conv:\n  max_in_channels: -3\n")
    one_line_error(cli(wide, "--target", yaml_bad), 2,
                   "conv.max_in_channels: expected a positive integer, got -3")
    yaml_key = tmp_path / "key.yaml"
    yaml_key.write_text("conv:\n  max_in_chanels: 3\n")
    one_line_error(cli(wide, "--target", yaml_key), 2, "conv.max_in_chanels: unknown key")
    yaml_syntax = tmp_path / "syntax.yaml"
    yaml_syntax.write_text("conv: [1, 2\n")
    one_line_error(cli(wide, "--target", yaml_syntax), 2, "not valid YAML")
    one_line_error(cli(wide, "--target", "nosuchchip"), 2, "unknown target 'nosuchchip'")
    one_line_error(cli(wide, "--target", small_target, "-o", wide), 2, "is the input model")
    one_line_error(cli(wide, "--target", small_target, "--input-shape", "x:1xbad"), 2,
                   "--input-shape")
    one_line_error(cli(wide), 2, "--target is required")
    one_line_error(cli(wide, "--target", small_target, "-o", tmp_path / "no" / "dir" / "o.onnx"),
                   2, "does not exist")
    assert digest(wide) == before
    created = set(listing()) - set(names) - {"garbage.onnx", "truncated.onnx", "bad_checker.onnx",
                                            "bad.yaml", "key.yaml", "syntax.yaml"}
    assert created == set(), created
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]   # no temp files left


def test_bad_flag_value(wide):
    r = cli(wide, "--target", "k210", "--rtol", "-1")
    assert r.returncode == 2 and "non-negative" in r.stderr


def test_external_data_round_trip(tmp_path, small_target):
    src = tmp_path / "ext.onnx"
    onnx.save(conv_model(cin=64, cout=48, spatial=(6, 6)), src, save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)
    out = tmp_path / "ext.out.onnx"
    r = cli(src, "--target", small_target, "-o", out)
    assert r.returncode == 0, r.stdout + r.stderr
    model = onnx.load(out, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    # one fresh data file, named from its content (outputs.data_file_name)
    [data] = [p.name for p in tmp_path.iterdir() if p.name.startswith("ext.out.onnx.")]
    assert data.endswith(".data") and len(data) == len("ext.out.onnx.") + 16 + len(".data")
    assert cli("verify", src, out).returncode == 0
