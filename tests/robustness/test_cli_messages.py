"""Messages, flags, determinism and idempotence (issue 12, classes 4 and 6): a bad flag is one
line (not argparse's usage), NaN/inf/negative tolerances are refused, --quiet still prints the
status on exit 1 and 3, onnxruntime's own logger never reaches stderr, output bytes do not depend
on PYTHONHASHSEED, and rewriting a rewritten model changes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper

from tests.conv_cases import conv_model
from tests.robustness.harness import Case, cases_param, run_case, run_cli, write_model
from tests.robustness.models import small_model, wide_model, write_chip


def _rewrite(*tail, model=wide_model, target="chip.yaml"):
    def setup(folder: Path) -> list:
        write_model(folder, "in.onnx", model())
        write_chip(folder)
        return ["in.onnx", "--target", target, *tail]
    return setup


def _verify(*tail):
    def setup(folder: Path) -> list:
        write_model(folder, "a.onnx", small_model())
        write_model(folder, "b.onnx", small_model())
        return ["verify", "a.onnx", "b.onnx", *tail]
    return setup


BAD_NUMBERS = ("nan", "NaN", "inf", "-inf", "Infinity", "-1", "-1e-9", "abc", "", "1e999", "0x10")


def flag_cases():
    for flag in ("--atol", "--rtol"):
        for value in BAD_NUMBERS:
            tag = value.replace("-", "neg").replace(".", "_") or "empty"
            yield Case(f"flag{flag[1:]}_{tag}", _rewrite(flag, value, "-o", "o.onnx"), expect=2,
                       needle=flag)
            yield Case(f"verify{flag[1:]}_{tag}", _verify(flag, value), expect=2, needle=flag)
    bad = {
        "unknown_flag": (["--no-such-flag"], "--no-such-flag"),
        "missing_value": (["-o"], "-o"),
        "seed_text": (["--seed", "x"], "--seed"),
        "seed_float": (["--seed", "1.5"], "--seed"),
        "tvm_tune_text": (["--tvm-tune", "many"], "--tvm-tune"),
        "two_models": (["other.onnx"], "unrecognized"),
        "tvm_out_alone": (["--tvm-out", "d"], "--tvm-out"),
        "rpc_key_alone": (["--rpc-key", "k"], "--rpc-key"),
        "vendor_out_alone": (["--vendor-out", "d"], "--vendor-out"),
        "input_shape_bad": (["--input-shape", "x:axb"], "--input-shape"),
        "input_shape_negative": (["--input-shape", "x:1x-3"], "--input-shape"),
        "inputs_missing": (["--inputs", "nope.npz", "-o", "o.onnx"], "nope.npz"),
        "demo_and_model": (["--demo"], "exactly one"),
        "demo_unknown": (["--demo", "nosuch"], None),
    }
    for name, (tail, needle) in bad.items():
        yield Case(f"flag_{name}", _rewrite(*tail), expect=2, needle=needle)
    yield Case("verify_unknown_flag", _verify("--bogus"), expect=2, needle="--bogus")
    yield Case("verify_missing_model", lambda f: ["verify", "a.onnx"], expect=2, needle="rewritten")
    yield Case("no_arguments", lambda f: [], expect=2, needle="MODEL")
    yield Case("tolerance_zero_ok", _rewrite("--atol", "0", "--rtol", "0.5", "-o", "o.onnx"))
    yield Case("tolerance_big_ok", _rewrite("--atol", "1e30", "-o", "o.onnx"))


def _status_line(code):
    def check(folder, result):
        assert result.stdout.strip().splitlines() == [f"status: {code}"], result.stdout
    return check


def quiet_cases():
    yield Case("quiet_mismatch_prints_status",
               _rewrite("-o", "o.onnx", "--atol", "0", "--rtol", "0", "--seed", "1", "-q"),
               expect=1, check=_status_line("mismatch"))
    yield Case("quiet_illegal_prints_status", _rewrite("--check-only", "-q"), expect=3,
               check=_status_line("illegal"))
    yield Case("quiet_ok_prints_status", _rewrite("-o", "o.onnx", "-q"), check=_status_line("ok"))


def _unused_initializer():
    """onnxruntime warns about an unused initializer on its own logger (stderr, coloured)."""
    m = wide_model()
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused_init"))
    return m


def logger_cases():
    for sub in (False, True):
        tag = "sub" if sub else "inproc"
        yield Case(f"ort_logger_silent_{tag}", _rewrite("-o", "o.onnx", model=_unused_initializer),
                   subprocess=sub)
    yield Case("sub_bad_flag_one_line", _rewrite("--atol", "nan"), expect=2, needle="--atol",
               subprocess=True)
    yield Case("sub_unknown_flag_one_line", _rewrite("--frobnicate"), expect=2,
               needle="--frobnicate", subprocess=True)
    yield Case("sub_quiet_mismatch", _rewrite("-o", "o.onnx", "--atol", "0", "--rtol", "0",
                                              "--seed", "1", "-q"), expect=1,
               check=_status_line("mismatch"), subprocess=True)


ALL = [*flag_cases(), *quiet_cases(), *logger_cases()]


@cases_param(ALL)
def test_cli_case(case, tmp_path):
    run_case(case, tmp_path)


# ---------------------------------------------------------------- determinism and idempotence

SCENARIOS = {
    "channel_split": (wide_model, "chip.yaml"),
    "conv3d_generic": (lambda: conv_model(cin=8, cout=8, kernel=(3, 3, 3), spatial=(4, 6, 6),
                                          pads=(1,) * 6), "generic"),
    "stem_7x7s2_k210": (lambda: conv_model(cin=3, cout=16, kernel=(7, 7), strides=(2, 2),
                                           pads=(3, 3, 3, 3), spatial=(16, 16)), "k210"),
    "grouped_k210": (lambda: conv_model(cin=32, cout=32, groups=4, spatial=(8, 8),
                                        pads=(1, 1, 1, 1)), "k210"),
    "dilated_k210": (lambda: conv_model(cin=8, cout=8, dilations=(2, 2), pads=(2, 2, 2, 2),
                                        spatial=(12, 12)), "k210"),
    "transposed_k210": (lambda: conv_model(op="ConvTranspose", cin=8, cout=8, strides=(2, 2),
                                           spatial=(6, 6)), "k210"),
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rewriting_a_rewritten_model_changes_nothing(scenario, tmp_path):
    build, target = SCENARIOS[scenario]
    write_model(tmp_path, "in.onnx", build())
    write_chip(tmp_path)
    first = run_cli(["in.onnx", "--target", target, "-o", "once.onnx", "--no-verify"], tmp_path)
    assert first.code == 0, first
    second = run_cli(["once.onnx", "--target", target, "-o", "twice.onnx"], tmp_path)
    assert second.code == 0, second
    assert "nothing rewritten" in second.stdout, second.stdout
    assert _sha(tmp_path / "twice.onnx") == _sha(tmp_path / "once.onnx")


@pytest.mark.parametrize("scenario", ["channel_split", "stem_7x7s2_k210"])
def test_output_bytes_do_not_depend_on_the_hash_seed(scenario, tmp_path):
    build, target = SCENARIOS[scenario]
    write_model(tmp_path, "in.onnx", build())
    write_chip(tmp_path)
    digests = set()
    for seed in ("0", "1", "4242"):
        r = run_cli(["in.onnx", "--target", target, "-o", f"out{seed}.onnx", "--no-verify",
                     "--report", f"r{seed}.json"], tmp_path, subprocess=True,
                    env={"PYTHONHASHSEED": seed})
        assert r.code == 0, r
        digests.add(_sha(tmp_path / f"out{seed}.onnx"))
    assert len(digests) == 1
