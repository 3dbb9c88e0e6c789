"""Make the vendor venvs: ``python -m convrewrite.vendors.install [onnx2tf] [vela] [--force]``.

Each venv is built in a temporary folder beside its final place and renamed into place only when
its tool runs, so an interrupted install leaves no half-made venv that the judge would take for a
working one. onnx2tf needs Python >= 3.12: it is looked for as ``$CONVREWRITE_VENDOR_PYTHON``,
pyenv's installed 3.12 (or 3.13), then ``python3.12`` / ``python3.13`` on PATH.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .env import OPTIONAL, VENDORS, Vendor, VendorFailed, VendorMissing, vendor_dir

# What each venv is asked for; requirements/NAME.txt freezes what this resolved to on a working
# install, and is what a normal install uses (--unpinned re-resolves from these).
TOP_LEVEL = {
    "onnx2tf": ["onnx2tf[tensorflow]==2.6.9"],
    "vela": ["ethos-u-vela==5.2.0", "numpy<2.3"],
    "torch": ["torch==2.14.1", "torchvision==0.29.1", "timm==1.0.31", "onnx", "onnxscript"],
}
# How to tell that a venv works: the tool answers --version (onnx2tf prints its usage on -h).
SMOKE = {"onnx2tf": ["-h"], "vela": ["--version"],
         "torch": ["-c", "import torch, torchvision, timm"]}


def _version_ok(python: str, wanted: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if out.returncode != 0:
        return False
    major, minor = map(int, out.stdout.strip().split("."))
    want_major, want_minor = map(int, wanted.split("."))
    return (major, minor) >= (want_major, want_minor)


def find_python(wanted: str) -> str:
    """A Python of at least version ``wanted`` that can make venvs; 3.12 is preferred (measured)."""
    if not wanted:
        return sys.executable
    candidates = []
    if os.environ.get("CONVREWRITE_VENDOR_PYTHON"):
        candidates.append(os.environ["CONVREWRITE_VENDOR_PYTHON"])
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    pyenv = shutil.which("pyenv")
    if pyenv:
        out = subprocess.run([pyenv, "root"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            root = out.stdout.strip()
    for minor in ("3.12", "3.13"):
        candidates += sorted(glob.glob(f"{root}/versions/{minor}.*/bin/python{minor}"), reverse=True)
    for minor in ("3.12", "3.13"):
        for folder in os.environ.get("PATH", "").split(os.pathsep):
            exe = Path(folder) / f"python{minor}"
            if exe.is_file() and "shims" not in folder:
                candidates.append(str(exe))
    for exe in candidates:
        if _version_ok(exe, wanted):
            return exe
    raise VendorMissing(f"no Python >= {wanted} found (tried $CONVREWRITE_VENDOR_PYTHON, pyenv "
                        f"versions under {root}, python3.12/python3.13 on PATH); install one "
                        "(e.g. `pyenv install 3.12`) or point CONVREWRITE_VENDOR_PYTHON at it")


def _run(cmd: list[str], what: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise VendorFailed(f"{what} failed (exit {out.returncode}): {tail[0]}")


def install(vendor: Vendor, force: bool = False, unpinned: bool = False,
            log=print) -> Path:
    final = vendor.venv()
    if vendor.venv_executable().is_file() and not force:
        log(f"{vendor.name}: already installed in {final}")
        return final
    python = find_python(vendor.python)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{vendor.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    start = time.monotonic()
    try:
        _run([python, "-m", "venv", str(staging)], f"{vendor.name}: making the venv")
        pip = [str(staging / "bin" / "python"), "-m", "pip", "install", "-q",
               "--disable-pip-version-check"]
        if unpinned:
            _run([*pip, *TOP_LEVEL[vendor.name]], f"{vendor.name}: pip install")
        else:
            reqs = staging / "requirements.txt"
            reqs.write_text(vendor.requirements())
            _run([*pip, "--no-deps", "-r", str(reqs)], f"{vendor.name}: pip install")
        # The venv is moved into place after the tool answers; console scripts carry the venv's
        # path in their shebang, so they are made again by pip's own fix below.
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        _fix_shebangs(final, staging)
        smoke = [str(vendor.venv_executable()), *SMOKE[vendor.name]]
        _run(smoke, f"{vendor.name}: running {' '.join(smoke[-2:])}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file() and not p.is_symlink())
    log(f"{vendor.name}: installed in {final} ({time.monotonic() - start:.0f} s, "
        f"{size / 2**30:.2f} GiB)")
    return final


def _fix_shebangs(venv: Path, old: Path) -> None:
    """Point the venv's scripts (and its activate files) at the folder it now lives in."""
    for script in (venv / "bin").iterdir():
        if not script.is_file() or script.is_symlink():
            continue
        try:
            text = script.read_text()
        except UnicodeDecodeError:
            continue
        if str(old) in text:
            script.write_text(text.replace(str(old), str(venv)))
    cfg = venv / "pyvenv.cfg"
    if cfg.is_file():
        cfg.write_text(cfg.read_text().replace(str(old), str(venv)))


def freeze(vendor: Vendor) -> str:
    """What a working venv holds, as the pinned requirements file this package ships."""
    out = subprocess.run([str(vendor.venv() / "bin" / "python"), "-m", "pip", "freeze",
                          "--all", "--exclude", "pip", "--exclude", "setuptools"],
                         capture_output=True, text=True, check=True)
    return "".join(line + "\n" for line in sorted(out.stdout.splitlines(), key=str.lower))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convrewrite.vendors.install",
                                description="Make the vendor venvs the Ethos-U judge runs in "
                                            f"(into {vendor_dir()}; $CONVREWRITE_VENDOR_DIR).")
    p.add_argument("names", nargs="*", choices=[[], *VENDORS, *OPTIONAL], metavar="NAME",
                   help=f"which ({', '.join(VENDORS)}; default all of those; also "
                        f"{', '.join(OPTIONAL)} for the benchmarks)")
    p.add_argument("--force", action="store_true", help="make them again even if present")
    p.add_argument("--unpinned", action="store_true",
                   help="resolve from the top-level pins, not the frozen requirements files")
    p.add_argument("--freeze", metavar="DIR",
                   help="after installing, write each venv's frozen requirements into DIR")
    args = p.parse_args(argv)
    try:
        for name in args.names or list(VENDORS):
            vendor = {**VENDORS, **OPTIONAL}[name]
            install(vendor, force=args.force, unpinned=args.unpinned)
            if args.freeze:
                Path(args.freeze, f"{name}.txt").write_text(freeze(vendor))
    except (VendorMissing, VendorFailed) as exc:
        print(f"convrewrite.vendors.install: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
