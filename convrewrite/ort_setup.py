"""onnxruntime as every part of convrewrite runs it: quiet, on sessions made the same way, its
failures known by name.

onnxruntime's own logger writes coloured lines straight to stderr (fd 2), warnings and errors
alike (a failed kernel logs [E:onnxruntime:...] and then raises). Our messages are one line and
every onnxruntime error reaches us as an exception, so only FATAL may print: the default logger is
set so on import, and every session's options say so too.
"""

from __future__ import annotations

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _state

ORT_LOG_SEVERITY = 4
ort.set_default_logger_severity(ORT_LOG_SEVERITY)


def session_options() -> ort.SessionOptions:
    """Options for a session that logs nothing below FATAL."""
    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_SEVERITY
    return options


# onnxruntime's own exception types, one per status code of its C++ API (Fail, InvalidArgument,
# InvalidGraph, NotImplemented, RuntimeException, ...): each derives from Exception alone, so a
# failure of onnxruntime's is told from a Python error only by naming them.
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    e for e in vars(_state).values() if isinstance(e, type) and issubclass(e, Exception))
