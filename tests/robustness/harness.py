"""Run one hostile-input case and check every promise the README makes about it.

A case is a name, a ``setup(folder) -> argv`` that writes its input files into an empty folder and
returns the command line, and what is expected: the exit codes allowed (never 4) and, for a
failure, a substring of the one stderr line. ``run_case`` then checks, whatever the case:

- the exit code is one of those expected, and never 4 (an internal error is always our bug);
- on a failure (exit 1 or 2) stderr is exactly one line starting ``convrewrite: error:`` naming
  the problem (exit 1 prints its table on stdout; its stderr may be empty);
- every file that existed before the run is byte-identical after it (inputs are never touched),
  except those the case names in ``may_change`` (an existing ``-o`` it overwrites);
- on exit 2 nothing new is written at all, on exit 1 no model (a --report JSON may be); otherwise
  every new ``.onnx`` file passes ``onnx.checker`` with its external data, and every new ``.json``
  parses;
- no temporary file (a leftover ``.name.xxxx`` staging file or folder) is left anywhere under
  the folder.

Cases run in-process through ``convrewrite.cli.main`` (fast: the bulk) or through a real
subprocess (``subprocess=True``: the console behaviour, onnxruntime's C++ logger included). In
process, stderr is captured at the file-descriptor level, so native libraries' writes count too.

Other test files build their own generators of cases on top of this (``tests/robustness/
test_model_*.py`` for model semantics, ``test_files_*.py``, ``test_cli_*.py``, ``test_yaml_*.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess as sp
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import onnx

ALLOWED_FAILURE_CODES = (1, 2, 3)


@dataclass
class Case:
    """One hostile or unusual input and what the command must do with it.

    ``setup(folder)`` writes the case's files into ``folder`` and returns argv (strings or paths;
    relative paths are relative to ``folder``, the run's working directory). ``expect``: the exit
    codes allowed. ``needle``: a substring the stderr line must contain on exit 2 (None: any
    one line). ``may_change``: names (relative to the folder) of pre-existing files the run may
    replace. ``check``: an optional extra assertion ``check(folder, result)`` run afterwards.
    """

    name: str
    setup: Callable[[Path], list]
    expect: tuple[int, ...] = (0,)
    needle: str | None = None
    may_change: tuple[str, ...] = ()
    check: Callable[[Path, "Result"], None] | None = None
    subprocess: bool = False
    env: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.expect, int):
            self.expect = (self.expect,)
        assert 4 not in self.expect, "exit 4 is an internal error: never an expected result"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def cases_param(cases: Iterable[Case]):
    """``pytest.mark.parametrize`` arguments with readable ids; duplicate names are an error."""
    import pytest
    cases = list(cases)
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"duplicate case names: {dupes}"
    return pytest.mark.parametrize("case", cases, ids=names)


def through_subprocess(cases: Iterable[Case], every: int) -> list[Case]:
    """Every ``every``-th case again, through a real ``python -m convrewrite.cli`` (the console
    behaviour: exit status, native libraries' stderr), named ``<case>_sub``."""
    from dataclasses import replace
    return [replace(c, name=f"{c.name}_sub", subprocess=True)
            for i, c in enumerate(cases) if i % every == 0]


# ---------------------------------------------------------------- snapshots

def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256 (or 'dir' / 'link->target')} for everything under ``folder``."""
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = f"link->{os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                try:
                    out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
                except OSError as exc:          # unreadable on purpose (chmod 000)
                    out[rel] = f"unreadable:{exc.errno}"
    return out


def temp_leftovers(folder: Path, before: dict[str, str]) -> list[str]:
    """New entries that look like our staging files: hidden names or ``.tmp`` names."""
    return sorted(rel for rel in snapshot(folder) if rel not in before
                  and any(part.startswith((".", "tmp")) or part.endswith(".tmp")
                          for part in Path(rel).parts))


# ---------------------------------------------------------------- running

@contextlib.contextmanager
def _capture_fd(fd: int) -> Iterator[io.StringIO]:
    """Capture what is written to a file descriptor (Python and native code alike)."""
    stream = sys.stderr if fd == 2 else sys.stdout
    buf = io.StringIO()
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        py_saved = (sys.stdout, sys.stderr)
        text = io.TextIOWrapper(os.fdopen(os.dup(fd), "wb"), encoding="utf-8",
                                errors="replace", write_through=True)
        if fd == 2:
            sys.stderr = text
        else:
            sys.stdout = text
        try:
            yield buf
        finally:
            text.flush()
            sys.stdout, sys.stderr = py_saved
            text.close()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            buf.write(tmp.read().decode("utf-8", errors="replace"))


def run_cli(argv: list, cwd: Path, *, subprocess: bool = False, env: dict | None = None,
            timeout: float = 300) -> Result:
    """Run ``convrewrite ARGV`` in ``cwd``, in-process or as a real subprocess."""
    argv = [os.fspath(a) for a in argv]
    if subprocess:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("CONVREWRITE_DEBUG", None)
        r = sp.run([sys.executable, "-m", "convrewrite.cli", *argv], cwd=cwd, env=full_env,
                   capture_output=True, text=True, timeout=timeout)
        return Result(r.returncode, r.stdout, r.stderr)
    from convrewrite.cli import main
    old_cwd = os.getcwd()
    old_env = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    debug = os.environ.pop("CONVREWRITE_DEBUG", None)
    os.chdir(cwd)
    try:
        with _capture_fd(1) as out, _capture_fd(2) as err:
            try:
                code = main(argv)
            except SystemExit as exc:               # argparse's --help / errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if debug is not None:
            os.environ["CONVREWRITE_DEBUG"] = debug
    return Result(code, out.getvalue(), err.getvalue())


def check_onnx_output(path: Path) -> None:
    """onnx's checker from the file: it reads external data there and takes models past 2 GB."""
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:        # noqa: BLE001 - any checker failure is a broken promise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AssertionError(f"output {path.name} is not a valid model: {first}") from None


def run_case(case: Case, folder: Path) -> Result:
    """Set the case up in ``folder`` (empty), run it, and assert every promise (module doc)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    argv = case.setup(folder)
    before = snapshot(folder)
    result = run_cli(argv, folder, subprocess=case.subprocess, env=case.env)
    after = snapshot(folder)
    where = f"[{case.name}] exit {result.code}\nstdout: {result.stdout[-2000:]}\n" \
            f"stderr: {result.stderr[-2000:]}"
    assert result.code != 4, "internal error " + where
    assert result.code in case.expect, f"expected exit {case.expect} " + where
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.code == 2 or (result.code in (1, 3) and lines):
        assert len(lines) == 1, "not exactly one stderr line " + where
        assert lines[0].startswith("convrewrite: error:"), where
        if case.needle is not None and result.code == 2:
            assert case.needle in lines[0], f"stderr does not name {case.needle!r} " + where
    elif result.code == 0:
        assert not lines, "stderr on success " + where
    for rel, digest in before.items():
        if rel in case.may_change:
            continue
        assert after.get(rel) == digest, f"input {rel} changed or vanished " + where
    created = sorted(set(after) - set(before))
    if result.code in (1, 2):
        changed = [rel for rel in case.may_change if after.get(rel) != before.get(rel)]
        if result.code == 1:        # a mismatch writes no model; its --report JSON is the point
            created = [rel for rel in created if not rel.endswith(".json")]
        assert not created and not changed, f"wrote {created + changed} on failure " + where
    else:
        for rel in created:
            p = folder / rel
            if p.is_file() and p.suffix == ".onnx":
                check_onnx_output(p)
            elif p.is_file() and p.suffix == ".json":
                json.loads(p.read_text())
    leftovers = temp_leftovers(folder, before)
    assert not leftovers, f"temp files left: {leftovers} " + where
    if case.check is not None:
        case.check(folder, result)
    return result


# ---------------------------------------------------------------- building blocks for cases

def write_model(folder: Path, name: str, model: onnx.ModelProto, *, external: str | None = None,
                threshold: int = 0) -> Path:
    """Save ``model`` as ``folder/name`` (optionally with its tensors in ``external``)."""
    path = folder / name
    if external is None:
        onnx.save(model, str(path))
    else:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=external, size_threshold=threshold)
    return path


def model_case(name: str, model: "onnx.ModelProto | Callable[[], onnx.ModelProto]", *,
               target: str = "generic", args: tuple = ("-o", "out.onnx"),
               expect: "int | tuple[int, ...]" = (0,), needle: str | None = None,
               subprocess: bool = False, check=None) -> Case:
    """The common shape: one model file ``in.onnx`` rewritten for ``target`` with ``args``."""
    def setup(folder: Path) -> list:
        m = model() if callable(model) else model
        write_model(folder, "in.onnx", m)
        return ["in.onnx", "--target", target, *args]
    return Case(name, setup, expect=expect, needle=needle, subprocess=subprocess, check=check)
