"""The harness on the plain cases every CLI change must keep: bad files, bad flags, a rewrite,
a byte copy — in process for speed, and a few through a real subprocess."""

from __future__ import annotations

from pathlib import Path

from tests.robustness.harness import Case, cases_param, run_case, write_model
from tests.robustness.models import small_model, wide_model, write_chip


def _model_then(argv_tail, model=wide_model):
    def setup(folder: Path) -> list:
        write_model(folder, "in.onnx", model())
        write_chip(folder)
        return ["in.onnx", *argv_tail]
    return setup


def basic_cases():
    yield Case("rewrite_chip", _model_then(["--target", "chip.yaml", "-o", "out.onnx"]))
    yield Case("rewrite_chip_report", _model_then(["--target", "chip.yaml", "-o", "out.onnx",
                                                   "--report", "r.json"]))
    yield Case("copy_unchanged", _model_then(["--target", "generic", "-o", "out.onnx"],
                                             small_model))
    yield Case("check_only", _model_then(["--target", "chip.yaml", "--check-only"]), expect=3)
    yield Case("missing_model", lambda f: ["nope.onnx", "--target", "k210"], expect=2,
               needle="no such file")
    yield Case("garbage_model", lambda f: (f / "g.onnx").write_bytes(b"not a model") and
               ["g.onnx", "--target", "k210"], expect=2, needle="not an ONNX model")
    yield Case("unknown_target", _model_then(["--target", "nosuchchip"]), expect=2,
               needle="unknown target")
    yield Case("no_target", _model_then([]), expect=2, needle="--target is required")
    for sub in (False, True):
        tag = "sub" if sub else "inproc"
        yield Case(f"rewrite_{tag}_quiet", _model_then(["--target", "chip.yaml", "-o", "o.onnx",
                                                        "-q"]), subprocess=sub)


@cases_param(basic_cases())
def test_basic(case, tmp_path):
    run_case(case, tmp_path)
