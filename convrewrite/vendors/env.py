"""Where the vendor venvs live and what goes into them.

The venvs are a cache, never part of the repository: ``$CONVREWRITE_VENDOR_DIR``, else
``$XDG_CACHE_HOME/convrewrite/vendors``, else ``~/.cache/convrewrite/vendors``. Each venv is
pinned by a requirements file shipped in this package (``requirements/NAME.txt``, every
transitive version frozen from a working install), so a fresh machine gets the toolchain that
was measured here.

Vela can also come from the environment running us (``pip install 'convrewrite[vela]'``: Vela
5.2 runs on our Python and its pins coexist with ours). Its venv is preferred where both exist:
it is frozen as measured, and ``$CONVREWRITE_VENDOR_DIR`` then decides which Vela runs.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from ..errors import ConvRewriteError
from ..paths import cache_dir


class VendorMissing(ConvRewriteError):
    """A vendor venv (or a tool inside it) is not installed: exit 5, with the install command."""

    exit_code = 5


class VendorFailed(ConvRewriteError):
    """A vendor tool ran and failed (conversion error, crash): exit 6, with its last message."""

    exit_code = 6


@dataclass(frozen=True)
class Vendor:
    name: str            # the venv's folder name
    tool: str            # the console script the judge runs
    python: str          # which Python the venv needs ("3.12", or "" for the one running us)
    why: str
    extra: str = ""      # the convrewrite extra that installs it into our own environment

    def venv(self) -> Path:
        return vendor_dir() / self.name

    def venv_executable(self) -> Path:
        return self.venv() / "bin" / self.tool

    def environment_executable(self) -> Path | None:
        """The tool as its extra installed it beside the Python running us, or None."""
        if not self.extra:
            return None
        exe = Path(sysconfig.get_path("scripts")) / self.tool
        return exe if exe.is_file() else None

    def executable(self) -> Path:
        """The venv's tool if it is installed, else the one the extra put beside our Python (if
        its pins hold), else the venv's path (absent: what require() names)."""
        venv, here = self.venv_executable(), self.environment_executable()
        return here if here and not venv.is_file() and not self.unusable_here() else venv

    def interpreter(self) -> Path:
        """The Python that can import the tool's own modules (tflite_ops.py runs there)."""
        exe = self.require()
        return exe.parent / "python" if exe == self.venv_executable() else Path(sys.executable)

    def unusable_here(self) -> str | None:
        """Why the tool installed in our environment cannot be used (its extra's pins broken)."""
        wanted = EXTRA_PINS.get(self.extra, {})
        for package, (below, why) in wanted.items():
            try:
                have = metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
            if _release(have) >= _release(below):
                return f"{package} {have} is installed beside it; {self.name} needs < {below} " \
                       f"({why})"
        return None

    def requirements(self) -> str:
        return (resources.files("convrewrite.vendors") / "requirements" / f"{self.name}.txt"
                ).read_text()

    def require(self) -> Path:
        """The tool's path, or VendorMissing naming the command that installs it."""
        exe = self.executable()
        if not exe.is_file():
            extra = f", or pip install 'convrewrite[{self.extra}]'" if self.extra else ""
            broken = self.unusable_here() if self.environment_executable() else None
            found = f"; the {self.tool} in this environment is not used: {broken}" if broken else ""
            raise VendorMissing(
                f"{self.name} is not installed (no {exe}{found}); run: python -m "
                f"convrewrite.vendors.install {self.name}{extra} (or set CONVREWRITE_VENDOR_DIR)")
        return exe


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string ("2.2.6" -> (2, 2, 6); "2.3.0rc1" -> (2, 3, 0))."""
    found = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(x) for x in found.group(0).split(".")) if found else (0,)


# onnx2tf 2.6.9 needs Python >= 3.12 and TensorFlow; Vela 5.2 runs on ours, but its legacy core
# crashes on grouped convs with numpy 2.4, so it gets numpy < 2.3 in a venv of its own.
ONNX2TF = Vendor("onnx2tf", "onnx2tf", "3.12", "ONNX -> int8 TFLite (onnx2tf 2.6.9, TensorFlow)")
VELA = Vendor("vela", "vela", "", "Arm Ethos-U compiler (ethos-u-vela 5.2.0)", extra="vela")
# What an extra's tool needs of the environment it shares with us, checked before it is used
# (pip keeps these at install time; a later upgrade would break Vela's legacy core silently).
EXTRA_PINS = {"vela": {"numpy": ("2.3", "Vela's legacy core crashes on grouped convs with "
                                        "numpy 2.4")}}
# Only for benchmarks/vendor_placement.py (real architectures exported from PyTorch); not made by
# default. torch 2.14.1 / torchvision 0.29.1 are the releases this machine kind keeps on disk.
TORCH = Vendor("torch", "python", "", "torch 2.14.1, torchvision 0.29.1, timm (benchmark exports)")
VENDORS = {v.name: v for v in (ONNX2TF, VELA)}
OPTIONAL = {TORCH.name: TORCH}


def vendor_dir() -> Path:
    return cache_dir("vendors", "CONVREWRITE_VENDOR_DIR")


def missing() -> list[str]:
    """Names of the vendor venvs not installed (the vendor tests' skip reason lists them)."""
    return [v.name for v in VENDORS.values() if not v.executable().is_file()]
