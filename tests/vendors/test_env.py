"""Where the judge finds Vela: its venv, else the ``[vela]`` extra in the environment running us
(only while numpy < 2.3 there), else a one-line VendorMissing naming both ways to install it.
Runs without the venvs: stand-in scripts in a temporary vendor dir and scripts dir."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from convrewrite.vendors import env, install
from convrewrite.vendors.env import ONNX2TF, VELA, VendorMissing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def places(tmp_path, monkeypatch):
    """An empty vendor dir and a scripts dir standing in for our environment's bin/."""
    vendors, scripts = tmp_path / "vendors", tmp_path / "bin"
    vendors.mkdir(), scripts.mkdir()
    monkeypatch.setenv("CONVREWRITE_VENDOR_DIR", str(vendors))
    real = env.sysconfig.get_path
    monkeypatch.setattr(env.sysconfig, "get_path",
                        lambda name, *a, **k: str(scripts) if name == "scripts" else real(name))
    monkeypatch.setattr(env.metadata, "version", lambda name: "2.2.6")
    return vendors, scripts


def put(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    return path


def test_the_extra_pins_what_the_venv_is_made_from():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert extras["vela"] == install.TOP_LEVEL["vela"]


def test_vela_from_this_environment_without_a_venv(places):
    _, scripts = places
    here = put(scripts / "vela")
    assert VELA.require() == here
    assert VELA.interpreter() == Path(sys.executable)
    assert "vela" not in env.missing()


def test_the_venv_is_preferred(places):
    vendors, scripts = places
    put(scripts / "vela")
    venv = put(vendors / "vela" / "bin" / "vela")
    assert VELA.require() == venv
    assert VELA.interpreter() == vendors / "vela" / "bin" / "python"


def test_numpy_too_new_beside_it_is_one_line_naming_why(places, monkeypatch):
    _, scripts = places
    put(scripts / "vela")
    monkeypatch.setattr(env.metadata, "version", lambda name: "2.4.6")
    with pytest.raises(VendorMissing) as err:
        VELA.require()
    text = str(err.value)
    assert "\n" not in text and "numpy 2.4.6" in text and "needs < 2.3" in text
    assert "python -m convrewrite.vendors.install vela" in text
    assert "pip install 'convrewrite[vela]'" in text
    assert "vela" in env.missing()


def test_onnx2tf_has_no_extra(places):
    _, scripts = places
    put(scripts / "onnx2tf")
    assert ONNX2TF.environment_executable() is None
    with pytest.raises(VendorMissing, match="install onnx2tf \\(or set"):
        ONNX2TF.require()
