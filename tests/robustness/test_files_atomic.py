"""Fault injection for the atomic writes (outputs.py): make every file operation fail in turn, or
kill the process right before it, and check that the old model + data pair or the new pair
survives intact — never a mix — and that no staging file is left after a raised error."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from convrewrite import outputs
from convrewrite.errors import BadInputError
from convrewrite.graph import save_model
from tests.conv_cases import conv_model

# The operations a write is made of, as outputs.py calls them.
STEPS = (("os", "replace"), ("os", "chmod"), ("tempfile", "mkdtemp"), ("tempfile", "mkstemp"),
         ("onnx", "save_model"), ("os", "fdopen"))


class Faults:
    """Counts calls to STEPS; raises OSError (or kills the process) at call number ``fail_at``."""

    def __init__(self, monkeypatch, fail_at: int | None = None, kill: bool = False):
        self.calls: list[str] = []
        self.fail_at, self.kill = fail_at, kill
        modules = {"os": os, "tempfile": tempfile, "onnx": onnx}
        for mod, name in STEPS:
            real = getattr(modules[mod], name)
            monkeypatch.setattr(modules[mod], name, self._wrap(f"{mod}.{name}", real))

    def _wrap(self, label, real):
        def call(*a, **k):
            if self.fail_at is not None and len(self.calls) == self.fail_at:
                self.calls.append(label)
                if self.kill:
                    os._exit(9)
                raise OSError(errno.EIO, f"injected fault in {label}")
            self.calls.append(label)
            return real(*a, **k)
        return call


def weights(model: onnx.ModelProto) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def state(folder: Path) -> dict:
    """out.onnx's weights, loaded with its external data (the pair must be complete)."""
    return weights(onnx.load(str(folder / "out.onnx"), load_external_data=True))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def referenced(folder: Path) -> set[str]:
    m = onnx.load(str(folder / "out.onnx"), load_external_data=False)
    return {e.value for t in outputs.tensors_of(m) for e in t.external_data if e.key == "location"}


OLD = conv_model(cin=16, cout=16, seed=0)
NEW = conv_model(cin=16, cout=16, seed=1)


def _old_pair(folder: Path, external: bool) -> None:
    save_model(OLD, folder / "out.onnx", external_data=external)


def _count_steps(tmp_path, monkeypatch, old_external, new_external) -> int:
    folder = tmp_path / "count"
    folder.mkdir()
    _old_pair(folder, old_external)
    with monkeypatch.context() as m:
        faults = Faults(m)
        save_model(NEW, folder / "out.onnx", external_data=new_external)
    assert same(state(folder), weights(NEW))
    return len(faults.calls)


PAIRS = [(True, True), (False, True), (True, False), (False, False)]


@pytest.mark.parametrize("old_external,new_external", PAIRS)
def test_raise_at_every_step_leaves_old_or_new_pair(tmp_path, monkeypatch, old_external,
                                                    new_external):
    n = _count_steps(tmp_path, monkeypatch, old_external, new_external)
    assert n >= 3
    for k in range(n):
        folder = tmp_path / f"step{k}"
        folder.mkdir()
        _old_pair(folder, old_external)
        with monkeypatch.context() as m:
            Faults(m, fail_at=k)
            with pytest.raises(BadInputError, match="cannot write"):
                save_model(NEW, folder / "out.onnx", external_data=new_external)
        now = state(folder)
        assert same(now, weights(OLD)) or same(now, weights(NEW)), k
        names = {p.name for p in folder.iterdir()}
        assert names == {"out.onnx"} | referenced(folder), (k, names)     # no staging, no orphans


@pytest.mark.parametrize("old_external,new_external", PAIRS)
def test_kill_before_every_step_leaves_old_or_new_pair(tmp_path, monkeypatch, old_external,
                                                       new_external):
    """A SIGKILL runs no cleanup: staging files may stay, but out.onnx and the data it names are
    the old pair or the new pair. The kill is a forked child's ``os._exit`` at step k."""
    n = _count_steps(tmp_path, monkeypatch, old_external, new_external)
    for k in range(n):
        folder = tmp_path / f"kill{k}"
        folder.mkdir()
        _old_pair(folder, old_external)
        pid = os.fork()
        if pid == 0:                                    # the child: dies at step k, no cleanup
            try:
                Faults(pytest.MonkeyPatch(), fail_at=k, kill=True)
                save_model(NEW, folder / "out.onnx", external_data=new_external)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 9, (k, status)
        now = state(folder)
        assert same(now, weights(OLD)) or same(now, weights(NEW)), k


def test_text_and_copy_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("old")
    src = tmp_path / "src.bin"
    src.write_bytes(b"new bytes")
    for write in (lambda: outputs.write_text(target, "new"),
                  lambda: outputs.copy_file(src, target)):
        with monkeypatch.context() as m:
            faults = Faults(m)
            write()
        n = len(faults.calls)
        for k in range(n):
            target.write_text("old")
            with monkeypatch.context() as m:
                Faults(m, fail_at=k)
                with pytest.raises(BadInputError):
                    write()
            assert target.read_text() == "old"
            assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "src.bin"]


def test_written_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        outputs.write_text(tmp_path / "a.json", "{}")
        outputs.copy_file(tmp_path / "a.json", tmp_path / "b.json")
        files = save_model(NEW, tmp_path / "m.onnx", external_data=True)
    finally:
        os.umask(old)
    for p in [tmp_path / "a.json", tmp_path / "b.json", *files]:
        assert p.stat().st_mode & 0o777 == 0o644, p


def test_save_keeps_callers_model_and_replaces_old_data(tmp_path):
    model = conv_model(cin=16, cout=16, seed=2)
    before = model.SerializeToString()
    first = save_model(model, tmp_path / "m.onnx", external_data=True)
    assert model.SerializeToString() == before              # raw_data not cleared
    second = save_model(NEW, tmp_path / "m.onnx", external_data=True)
    assert first[1] != second[1] and not first[1].exists() and second[1].exists()
    again = save_model(NEW, tmp_path / "m.onnx", external_data=True)
    assert again == second and second[1].exists()            # same data: same name, kept


def test_never_removes_a_data_file_it_did_not_name(tmp_path):
    """The old -o pointed at someone else's data file: it is left alone."""
    onnx.save(OLD, str(tmp_path / "out.onnx"), save_as_external_data=True, location="theirs.bin",
              size_threshold=0)
    save_model(NEW, tmp_path / "out.onnx", external_data=True)
    assert (tmp_path / "theirs.bin").exists()
