"""Vendor tests run the real toolchains (onnx2tf, Vela) from their venvs; without them they skip
with the command that installs them. Conversions are cached by content across the session in
``$CONVREWRITE_VENDOR_TEST_CACHE`` (else a temporary folder), so the probe table and the
lowering tests share one onnx2tf run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convrewrite.vendors.env import missing


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and "needs_vendors" in item.fixturenames:
            item.add_marker(pytest.mark.vendor)


@pytest.fixture(scope="session")
def needs_vendors():
    absent = missing()
    if absent:
        pytest.skip(f"vendor venvs not installed ({', '.join(absent)}): run "
                    "`python -m convrewrite.vendors.install`")


@pytest.fixture(scope="session")
def vendor_cache(tmp_path_factory, needs_vendors) -> Path:
    explicit = os.environ.get("CONVREWRITE_VENDOR_TEST_CACHE")
    return Path(explicit) if explicit else tmp_path_factory.mktemp("vela-cache")
