"""Output safety and I/O inputs (issue 12, classes 1 and 2): no path we write may be or alias a
path we read; a bad output path means nothing is written at all; broken external data, unusable
folders and report paths are exit 2 with one line, never exit 4."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from tests.robustness.harness import (Case, cases_param, run_case, through_subprocess,
                                       write_model)
from tests.robustness.models import small_model, wide_model, write_chip, write_npz


def _alias(kind: str, folder: Path, real: str, alias: str) -> str:
    """Make ``alias`` refer to ``real`` in ``folder`` (``kind``: symlink, hardlink, dotslash,
    absolute, parent) and return the spelling to pass on the command line."""
    if kind == "same":
        return real
    if kind == "dotslash":
        return f"./{real}"
    if kind == "absolute":
        return str((folder / real).resolve())
    if kind == "parent":
        (folder / "sub").mkdir(exist_ok=True)
        return f"sub/../{real}"
    if kind == "symlink":
        os.symlink(real, folder / alias)
        return alias
    if kind == "hardlink":
        os.link(folder / real, folder / alias)
        return alias
    raise ValueError(kind)


ALIASES = ("same", "dotslash", "absolute", "parent", "symlink", "hardlink")


def _setup(*, model=wide_model, external: str | None = None, npz: bool = False, extends=False):
    """A model ``in.onnx`` (tensors in ``external`` if given), chip.yaml (extending base.yaml if
    ``extends``), optionally inputs.npz; returns the files' names."""
    def make(folder: Path) -> dict:
        m = model()
        write_model(folder, "in.onnx", m, external=external)
        if extends:
            write_chip(folder, "base.yaml", "name: base\nconv:\n  max_in_channels: 16\n")
            write_chip(folder, text="name: chip\nextends: base.yaml\nconv:\n"
                                    "  max_out_channels: 32\n")
        else:
            write_chip(folder)
        if npz:
            write_npz(folder, "inputs.npz", m)
        return {"model": "in.onnx", "yaml": "chip.yaml", "data": external,
                "npz": "inputs.npz" if npz else None, "base": "base.yaml" if extends else None}
    return make


def alias_cases():
    """-o or --report naming (by any spelling) a file the run reads."""
    readers = {
        "model": dict(),
        "data": dict(external="in.onnx.data"),
        "yaml": dict(),
        "base": dict(extends=True),
        "npz": dict(npz=True),
    }
    for what, kw in readers.items():
        for kind in ALIASES:
            for flag in ("-o", "--report"):
                def setup(folder, what=what, kw=kw, kind=kind, flag=flag):
                    names = _setup(**kw)(folder)
                    target = _alias(kind, folder, names[what], "alias.bin")
                    argv = ["in.onnx", "--target", "chip.yaml"]
                    if names["npz"]:
                        argv += ["--inputs", "inputs.npz"]
                    if flag == "-o":
                        return argv + ["-o", target]
                    return argv + ["-o", "out.onnx", "--report", target]
                # onnx itself refuses external data with several hard links (an attack vector)
                needle = "hard links" if (what, kind) == ("data", "hardlink") \
                    else "refusing to overwrite"
                yield Case(f"{flag.strip('-')}_is_{what}_{kind}", setup, expect=2, needle=needle)
    # --report naming -o itself, in several spellings
    for kind in ("same", "dotslash", "absolute", "parent"):
        def setup(folder, kind=kind):
            _setup()(folder)
            spelled = {"same": "out.onnx", "dotslash": "./out.onnx",
                       "absolute": str(folder.resolve() / "out.onnx"),
                       "parent": "sub/../out.onnx"}[kind]
            (folder / "sub").mkdir(exist_ok=True)
            return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx", "--report", spelled]
        yield Case(f"report_is_output_{kind}", setup, expect=2, needle="--report")
    # the output's external data would land on the input's data file
    def setup(folder):
        _setup(external="out.onnx.data")(folder)
        return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx"]
    yield Case("output_data_name_is_input_data", setup, expect=0)
    for model, tag in ((wide_model, "rewrite"), (small_model, "copy")):
        def setup(folder, model=model):
            _setup(model=model, external="in.onnx.data")(folder)
            return ["in.onnx", "--target", "chip.yaml", "-o", "in.onnx.data"]
        yield Case(f"output_is_input_data_{tag}", setup, expect=2, needle="refusing")


def folder_cases():
    """Output paths that cannot be written: checked before anything is written."""
    def bad_report_folder(folder):
        _setup()(folder)
        return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx", "--report", "no/r.json"]
    yield Case("report_folder_missing", bad_report_folder, expect=2, needle="--report")

    def report_is_dir(folder):
        _setup()(folder)
        (folder / "r.json").mkdir()
        return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx", "--report", "r.json"]
    yield Case("report_is_directory", report_is_dir, expect=2, needle="directory")

    def report_is_dir_check(folder):
        _setup()(folder)
        (folder / "r.json").mkdir()
        return ["in.onnx", "--target", "chip.yaml", "--check-only", "--report", "r.json"]
    yield Case("report_is_directory_check_only", report_is_dir_check, expect=2,
               needle="directory")

    def under_file(flag):
        def setup(folder):
            _setup()(folder)
            (folder / "plain").write_text("x")
            if flag == "-o":
                return ["in.onnx", "--target", "chip.yaml", "-o", "plain/out.onnx"]
            return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx", "--report",
                    "plain/r.json"]
        return setup
    yield Case("output_under_regular_file", under_file("-o"), expect=2, needle="not a folder")
    yield Case("report_under_regular_file", under_file("--report"), expect=2,
               needle="not a folder")

    def out_is_dir(folder):
        _setup()(folder)
        (folder / "d.onnx").mkdir()
        return ["in.onnx", "--target", "chip.yaml", "-o", "d.onnx"]
    yield Case("output_is_directory", out_is_dir, expect=2, needle="directory")

    def out_existing(model):
        def setup(folder):
            _setup(model=model)(folder)
            (folder / "out.onnx").write_bytes(b"old contents")
            return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx"]
        return setup
    yield Case("output_overwritten_rewrite", out_existing(wide_model), may_change=("out.onnx",))
    yield Case("output_overwritten_copy", out_existing(small_model), may_change=("out.onnx",))

    def out_symlink_elsewhere(folder):
        _setup()(folder)
        (folder / "elsewhere.onnx").write_bytes(b"keep me")
        os.symlink("elsewhere.onnx", folder / "out.onnx")
        return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx"]
    yield Case("output_symlink_to_other_file", out_symlink_elsewhere, may_change=("out.onnx",))


def external_data_cases():
    """Broken external data: exit 2 naming the file, for rewrite, check-only and verify."""
    def model_with_location(location: str, make=None):
        def setup(folder):
            m = wide_model()
            write_model(folder, "in.onnx", m, external="tensors.bin")
            loaded = onnx.load(str(folder / "in.onnx"), load_external_data=False)
            for t in loaded.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = location
            onnx.save(loaded, str(folder / "in.onnx"))
            if make:
                make(folder)
            write_chip(folder)
            return folder
        return setup
    variants = {
        "missing": ("gone.bin", None, "gone.bin"),
        "directory": ("adir", lambda f: (f / "adir").mkdir(), "adir"),
        "absolute": ("/etc/hostname", None, "/etc/hostname"),
        "outside": ("../outside.bin", None, "outside.bin"),
        "dotdot_inside": ("sub/../../x.bin", lambda f: (f / "sub").mkdir(), "x.bin"),
        "empty_location": ("", None, "in.onnx"),
        "truncated": ("tensors.bin", lambda f: (f / "tensors.bin").write_bytes(b"\0" * 10),
                      "tensors.bin"),
    }
    modes = {"rewrite": ["-o", "out.onnx"], "check": ["--check-only"]}
    for name, (location, make, needle) in variants.items():
        for mode, tail in modes.items():
            def setup(folder, location=location, make=make, tail=tail):
                model_with_location(location, make)(folder)
                return ["in.onnx", "--target", "chip.yaml", *tail]
            yield Case(f"external_{name}_{mode}", setup, expect=2, needle=needle)

        def verify_setup(folder, location=location, make=make):
            model_with_location(location, make)(folder)
            write_model(folder, "ok.onnx", wide_model())
            return ["verify", "ok.onnx", "in.onnx"]
        yield Case(f"external_{name}_verify", verify_setup, expect=2, needle=needle)

    def keep_external(folder):
        write_model(folder, "in.onnx", wide_model(), external="in.onnx.data")
        write_chip(folder)
        return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx"]

    def has_external(folder, result):
        out = onnx.load(str(folder / "out.onnx"), load_external_data=False)
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in out.graph.initializer)
    yield Case("external_kept_rewrite", keep_external, check=has_external)

    def keep_external_copy(folder):
        write_model(folder, "in.onnx", small_model(), external="in.onnx.data")
        return ["in.onnx", "--target", "generic", "-o", "out.onnx"]
    yield Case("external_kept_copy", keep_external_copy, check=has_external)


ALL = [*alias_cases(), *folder_cases(), *external_data_cases()]
ALL += through_subprocess(ALL, 20)


@cases_param(ALL)
def test_file_case(case, tmp_path):
    run_case(case, tmp_path)


# ---------------------------------------------------------------- folders we cannot write

def _plain(folder):
    _setup()(folder)
    return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx", "--report", "r.json"]


def test_unwritable_folder_is_exit_2_before_any_work(tmp_path, monkeypatch):
    """As root a chmod 555 folder is still writable, so the check is exercised through
    os.access; the real chmod case runs below when not root."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode & os.W_OK else
                        real(p, mode, **k))
    run_case(Case("unwritable", _plain, expect=2, needle="not writable"), tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_for_real(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    _setup()(tmp_path)
    out.chmod(0o555)
    try:
        run_case(Case("read_only", lambda f: ["in.onnx", "--target", "chip.yaml", "-o",
                                              "ro/out.onnx"], expect=2, needle="not writable"),
                 tmp_path)
    finally:
        out.chmod(0o755)


@pytest.mark.parametrize("where", ["tempfile.mkdtemp", "tempfile.mkstemp", "os.replace"])
def test_write_failing_anyway_is_exit_2_and_leaves_nothing(tmp_path, monkeypatch, where):
    """The folder passed the checks but the write fails (disk full, permissions changed)."""
    import errno
    import tempfile
    mod, name = where.split(".")
    module = {"tempfile": tempfile, "os": os}[mod]
    real = getattr(module, name)

    def failing(*a, **k):
        folder = k.get("dir")
        if mod == "os" or (folder is not None and os.path.realpath(folder) ==
                           os.path.realpath(tmp_path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)
    monkeypatch.setattr(module, name, failing)
    run_case(Case(f"fail_{name}", lambda f: ["in.onnx", "--target", "chip.yaml", "-o",
                                             "out.onnx", "--report", "r.json"]
                  if _setup()(f) else [], expect=2, needle="cannot write"), tmp_path)


def test_copied_model_has_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        run_case(Case("copy_perm", lambda f: _setup(model=small_model)(f) and
                      ["in.onnx", "--target", "generic", "-o", "out.onnx", "--report", "r.json"]),
                 tmp_path)
    finally:
        os.umask(old)
    for name in ("out.onnx", "r.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def verify_report_cases():
    for what in ("a.onnx", "b.onnx", "inputs.npz", "b.onnx.data"):
        def setup(folder, what=what):
            write_model(folder, "a.onnx", small_model())
            write_model(folder, "b.onnx", small_model(), external="b.onnx.data")
            write_npz(folder, "inputs.npz", small_model())
            return ["verify", "a.onnx", "b.onnx", "--inputs", "inputs.npz", "--report", what]
        yield Case(f"verify_report_is_{what}", setup, expect=2, needle="refusing")

    def ok(folder):
        write_model(folder, "a.onnx", small_model())
        write_model(folder, "b.onnx", small_model(), external="b.onnx.data")
        return ["verify", "a.onnx", "b.onnx", "--report", "r.json"]
    yield Case("verify_report_ok", ok)

    def mismatch_report(folder):
        _setup()(folder)
        return ["in.onnx", "--target", "chip.yaml", "-o", "out.onnx", "--atol", "0", "--rtol",
                "0", "--seed", "1", "--report", "r.json"]
    yield Case("mismatch_writes_report_not_model", mismatch_report, expect=1,
               check=lambda f, r: (f / "r.json").exists() or (_ for _ in ()).throw(
                   AssertionError("no report on mismatch")))


@cases_param(verify_report_cases())
def test_verify_report_case(case, tmp_path):
    run_case(case, tmp_path)
