"""Bad SparseConv inputs and attributes give one clear error, from numpy, the pipeline and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from convrewrite import api
from convrewrite.errors import BadInputError
from convrewrite.sparse import SparseConvAttrs, SparseConvError, build_rulebook, sparse_conv
from tests.sparse.cases import HOST, sparse_model

ATTRS = SparseConvAttrs.create([3, 3], [5, 5], submanifold=True)
W = np.ones((2, 3, 3, 3), np.float32)
P = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)


@pytest.mark.parametrize("coords, message", [
    (np.array([[0, 1, 5], [0, 2, 3]], np.int32), r"row 0 \(0, 1, 5\): spatial dim 1 \(extent 5\) out"),
    (np.array([[0, 1, 2], [-1, 2, 3]], np.int32), r"row 1 \(-1, 2, 3\): batch index out of range"),
    (np.array([[0, 1, 2], [0, -2, 3]], np.int64), r"row 1 .*spatial dim 0"),
    (np.array([[0, 1, 2], [0, 1, 2]], np.int32), r"rows 0 and 1 are the same site \(0, 1, 2\)"),
    (np.array([[1, 1, 2], [0, 2, 3], [1, 1, 2]], np.int32), r"rows 0 and 2 are the same site"),
    (P.astype(np.float32), "must be int32 or int64, got float32"),
    (P[:, 1:], r"expected \[N, 3\] \(batch index, then 2 spatial\), got \[2, 2\]"),
])
def test_bad_coordinates(coords, message):
    with pytest.raises(SparseConvError, match=message):
        build_rulebook(coords, ATTRS)
    assert issubclass(SparseConvError, BadInputError)       # exit code 2 on the command line


@pytest.mark.parametrize("features, message", [
    (np.ones((3, 3), np.float32), r"expected \[2, Cin\]"),
    (np.ones((2, 3), np.int32), "must be float16, float32 or float64, got int32"),
    (np.ones((2, 4), np.float32), "W has 3 input channels, the features 4"),
])
def test_bad_features(features, message):
    with pytest.raises(SparseConvError, match=message):
        sparse_conv(features, P, W, attrs=ATTRS)


def test_bad_weight():
    with pytest.raises(SparseConvError, match=r"expected \[Cout, Cin, 3, 3\], got \[2, 3, 3\]"):
        sparse_conv(np.ones((2, 3), np.float32), P, W[..., 0], attrs=ATTRS)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_shape=[3, 3], spatial_shape=[5, 5], strides=[2, 2], submanifold=True),
     "submanifold SparseConv needs stride 1"),
    (dict(kernel_shape=[2, 2], spatial_shape=[5, 5], submanifold=True), "needs odd kernels"),
    (dict(kernel_shape=[3, 3], spatial_shape=[5, 5], pads=[0] * 4, submanifold=True),
     r"pads must be \[1, 1, 1, 1\]"),
    (dict(kernel_shape=[3], spatial_shape=[5]), "2 or 3 spatial dims"),
    (dict(kernel_shape=[3, 3], spatial_shape=[5]), r"spatial_shape: expected 2 values"),
    (dict(kernel_shape=[3, 3], spatial_shape=[5, 5], strides=[0, 1]), "must be >= 1"),
    (dict(kernel_shape=[7, 7], spatial_shape=[5, 5]), r"output grid \[-1, -1\] is empty"),
    (dict(kernel_shape=None, spatial_shape=[5, 5]), "needs the kernel_shape and spatial_shape"),
])
def test_bad_attributes(kwargs, message):
    with pytest.raises(SparseConvError, match=message):
        SparseConvAttrs.create(**kwargs)


def test_unknown_attribute():
    with pytest.raises(SparseConvError, match="unknown attribute 'group'"):
        SparseConvAttrs.from_node_attrs({"kernel_shape": [3, 3], "spatial_shape": [5, 5],
                                         "group": 2})


def test_constant_duplicate_coordinates_stop_the_rewrite():
    model = sparse_model(ATTRS, W, coords=np.array([[0, 1, 2], [0, 1, 2]], np.int32))
    with pytest.raises(BadInputError, match="SparseConv 'sconv': .*rows 0 and 1 are the same"):
        api.rewrite(model, HOST)


def test_cli_bad_node_is_one_line_exit_2(tmp_path):
    bad = sparse_model(ATTRS, W, attributes={"kernel_shape": [3, 3], "spatial_shape": [5, 5],
                                             "submanifold": 1, "strides": [2, 2]})
    path = tmp_path / "bad.onnx"
    onnx.save(bad, path)
    target = tmp_path / "host.yaml"
    target.write_text("name: host\n")
    proc = subprocess.run([sys.executable, "-m", "convrewrite.cli", str(path), "--target",
                           str(target), "-o", str(tmp_path / "out.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("convrewrite: error: SparseConv 'sconv': submanifold SparseConv "
                                   "needs stride 1, got [2, 2]")
    assert not (tmp_path / "out.onnx").exists()
