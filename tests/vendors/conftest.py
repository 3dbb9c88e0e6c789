"""Vendor tests run the real toolchains (onnx2tf, Vela) from their venvs (Vela also from the
``[vela]`` extra); without them they skip, saying which is missing, where it was looked for and
the command that installs it. Conversions are cached by content across the session in
``$CONVREWRITE_VENDOR_TEST_CACHE`` (else a temporary folder), so the probe table and the
lowering tests share one onnx2tf run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convrewrite.vendors.env import VENDORS, VendorMissing, missing


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and "needs_vendors" in item.fixturenames:
            item.add_marker(pytest.mark.vendor)


@pytest.fixture(scope="session")
def needs_vendors():
    absent = missing()
    if absent:
        why = []
        for name in absent:
            try:
                VENDORS[name].require()
            except VendorMissing as exc:
                why.append(str(exc))
        pytest.skip(f"vendor toolchains not installed ({', '.join(absent)}): "
                    f"{' | '.join(why)}")


@pytest.fixture(scope="session")
def vendor_cache(tmp_path_factory, needs_vendors) -> Path:
    explicit = os.environ.get("CONVREWRITE_VENDOR_TEST_CACHE")
    return Path(explicit) if explicit else tmp_path_factory.mktemp("vela-cache")
