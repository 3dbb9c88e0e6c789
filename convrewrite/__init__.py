"""convrewrite: rewrite ONNX convolutions so that every one fits an accelerator, and prove the
result equal to the original on onnxruntime."""

from .api import check, rewrite, verify
from .errors import BadInputError, ConvRewriteError, TargetError, VerificationError
from .report import Report
from .target import Target, load_target, preset_names
from .verify import Tolerance

__all__ = [
    "BadInputError", "ConvRewriteError", "Report", "Target", "TargetError", "Tolerance",
    "VerificationError", "check", "load_target", "preset_names", "rewrite", "verify",
]
