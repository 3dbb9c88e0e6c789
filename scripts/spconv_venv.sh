#!/usr/bin/env bash
# A virtual environment with torch (CPU) and spconv 2.3.8 beside convrewrite: what the spconv
# converter's first stage (convrewrite.sparse.spconv_import.describe), the spconv fixtures in
# tests/sparse/ and benchmarks/sparse.py's spconv columns run in. Neither torch nor spconv is a
# dependency of convrewrite itself.
#
#   scripts/spconv_venv.sh [VENV]        (default /tmp/spconv-venv, where the benchmark looks)
set -euo pipefail
venv="${1:-/tmp/spconv-venv}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0          # the CPU build (a CUDA one is several GB)
"$venv/bin/pip" install -q spconv==2.3.8
"$venv/bin/pip" install -q -e "$repo"
"$venv/bin/python" -c "import spconv, torch; print('spconv', spconv.__version__, 'torch', torch.__version__)"
