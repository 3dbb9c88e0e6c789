"""Vendor compilers as judges of what a target really runs.

Each vendor toolchain lives in its own virtual environment outside the core install (Vela and
onnx2tf need other Python and numpy versions than ours), made by ``python -m
convrewrite.vendors.install`` and found through ``convrewrite.vendors.env``. Nothing here imports a
vendor package: the judges run the vendors' own command-line tools in those venvs.
"""
