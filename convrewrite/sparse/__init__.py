"""Sparse convolution: the rulebook (numpy), a numpy executor, SparseConv in standard ONNX
(``onnx_form``), the dense reference on onnxruntime, and seeded inputs. The op's schema is
``ops.sparse_conv`` (re-exported here)."""

from .execute import execute, sparse_conv
from .rulebook import Rulebook, build_rulebook, check_coordinates
from ..ops.sparse_conv import (OP_TYPE, SparseConvAttrs, SparseConvError, onnx_weight_from_spconv,
                               spconv_weight_from_onnx, tap_weights)

__all__ = ["OP_TYPE", "Rulebook", "SparseConvAttrs", "SparseConvError", "build_rulebook",
           "check_coordinates", "execute", "onnx_weight_from_spconv", "sparse_conv",
           "spconv_weight_from_onnx", "tap_weights"]
