"""The harness itself must fail when a promise breaks, or every case built on it proves nothing."""

from __future__ import annotations

import pytest

from tests.robustness.harness import Case, run_case, write_model
from tests.robustness.models import small_model


def _existing_output(folder):
    write_model(folder, "in.onnx", small_model())
    (folder / "out.onnx").write_bytes(b"old")
    return ["in.onnx", "--target", "generic", "-o", "out.onnx"]


def test_changed_file_is_caught(tmp_path):
    with pytest.raises(AssertionError, match="out.onnx changed"):
        run_case(Case("overwrite", _existing_output), tmp_path / "a")
    run_case(Case("overwrite_allowed", _existing_output, may_change=("out.onnx",)), tmp_path / "b")


def test_wrong_exit_and_wrong_message_are_caught(tmp_path):
    missing = lambda f: ["nope.onnx", "--target", "k210"]     # noqa: E731
    with pytest.raises(AssertionError, match="expected exit"):
        run_case(Case("missing", missing), tmp_path / "a")
    with pytest.raises(AssertionError, match="does not name"):
        run_case(Case("missing2", missing, expect=2, needle="something else"), tmp_path / "b")


def test_exit_4_is_never_expected():
    with pytest.raises(AssertionError):
        Case("bad", lambda f: [], expect=(0, 4))
