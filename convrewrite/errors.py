"""Error types that map to the command line's exit codes.

Every user-facing failure is one of these, so the CLI can print one line and pick the exit code
without parsing messages.
"""


class ConvRewriteError(Exception):
    """Base class; ``exit_code`` is what the command line returns."""

    exit_code = 2


class BadInputError(ConvRewriteError):
    """The user's file, model, flags or target YAML cannot be used (exit 2)."""

    exit_code = 2


class TargetError(BadInputError):
    """A target YAML key or value is wrong; the message starts with the key path."""


class VerificationError(ConvRewriteError):
    """A rewritten model does not match the original within tolerance (exit 1)."""

    exit_code = 1
