"""Sparse convolution: the rulebooks of SparseConv and SparseInverseConv (numpy), a numpy
executor, their standard-ONNX forms (``forms`` chooses, ``onnx_form`` writes), sparse regions of
dense models (``region``), the spconv converter (``spconv_import``), the TVM build of sparse
models (``tvm_model``), the dense references on onnxruntime and seeded inputs. The ops' schemas
are ``ops.sparse_conv`` (re-exported here)."""

from ..ops.sparse_conv import (INVERSE_OP_TYPE, OP_TYPE, SparseConvAttrs, SparseConvError,
                               onnx_weight_from_spconv, spconv_weight_from_onnx, tap_weights)
from .execute import execute, sparse_conv, sparse_inverse_conv
from .rulebook import (Rulebook, build_inverse_rulebook, build_rulebook, check_coordinates,
                       reverse)

__all__ = ["INVERSE_OP_TYPE", "OP_TYPE", "Rulebook", "SparseConvAttrs", "SparseConvError",
           "build_inverse_rulebook", "build_rulebook", "check_coordinates", "execute",
           "onnx_weight_from_spconv", "reverse", "sparse_conv", "sparse_inverse_conv",
           "spconv_weight_from_onnx", "tap_weights"]
