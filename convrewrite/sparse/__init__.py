"""Sparse convolution: our ``SparseConv`` and ``SparseInverseConv`` ops (schema in ``schema``),
their rulebooks (numpy), a numpy executor, the dense references they are verified against, and
their lowering to standard ONNX (``forms`` chooses the layout, ``lowering`` emits it)."""

from .execute import execute, sparse_conv, sparse_inverse_conv
from .rulebook import (Rulebook, build_inverse_rulebook, build_rulebook, check_coordinates,
                       reverse)
from .schema import (INVERSE_OP_TYPE, OP_TYPE, SparseConvAttrs, SparseConvError,
                     onnx_weight_from_spconv, spconv_weight_from_onnx, tap_weights)

__all__ = ["INVERSE_OP_TYPE", "OP_TYPE", "Rulebook", "SparseConvAttrs", "SparseConvError",
           "build_inverse_rulebook", "build_rulebook", "check_coordinates", "execute",
           "onnx_weight_from_spconv", "reverse", "sparse_conv", "sparse_inverse_conv",
           "spconv_weight_from_onnx", "tap_weights"]
