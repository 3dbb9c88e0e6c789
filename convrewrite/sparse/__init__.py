"""Sparse convolution: our ``SparseConv`` op (schema in ``schema``), its rulebook (numpy), a numpy
executor, the dense reference it is verified against, and its lowering to standard ONNX."""

from .execute import execute, sparse_conv
from .rulebook import Rulebook, build_rulebook, check_coordinates
from .schema import (OP_TYPE, SparseConvAttrs, SparseConvError, onnx_weight_from_spconv,
                     spconv_weight_from_onnx, tap_weights)

__all__ = ["OP_TYPE", "Rulebook", "SparseConvAttrs", "SparseConvError", "build_rulebook",
           "check_coordinates", "execute", "onnx_weight_from_spconv", "sparse_conv",
           "spconv_weight_from_onnx", "tap_weights"]
