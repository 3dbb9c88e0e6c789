"""Where the vendor venvs live and what goes into them.

The venvs are a cache, never part of the repository: ``$CONVREWRITE_VENDOR_DIR``, else
``$XDG_CACHE_HOME/convrewrite/vendors``, else ``~/.cache/convrewrite/vendors``. Each venv is
pinned by a requirements file shipped in this package (``requirements/NAME.txt``, every
transitive version frozen from a working install), so a fresh machine gets the toolchain that
was measured here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
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

    def venv(self) -> Path:
        return vendor_dir() / self.name

    def executable(self) -> Path:
        return self.venv() / "bin" / self.tool

    def requirements(self) -> str:
        return (resources.files("convrewrite.vendors") / "requirements" / f"{self.name}.txt"
                ).read_text()

    def require(self) -> Path:
        """The tool's path, or VendorMissing naming the command that installs it."""
        exe = self.executable()
        if not exe.is_file():
            raise VendorMissing(
                f"{self.name} is not installed (no {exe}); run: python -m "
                f"convrewrite.vendors.install {self.name} (or set CONVREWRITE_VENDOR_DIR)")
        return exe


# onnx2tf 2.6.9 needs Python >= 3.12 and TensorFlow; Vela 5.2 runs on ours, but its legacy core
# crashes on grouped convs with numpy 2.4, so it gets numpy < 2.3 in a venv of its own.
ONNX2TF = Vendor("onnx2tf", "onnx2tf", "3.12", "ONNX -> int8 TFLite (onnx2tf 2.6.9, TensorFlow)")
VELA = Vendor("vela", "vela", "", "Arm Ethos-U compiler (ethos-u-vela 5.2.0)")
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
