"""The TVM tests run only where apache-tvm is installed (CI installs it with the test extra)."""

import pytest

pytest.importorskip("tvm")
