"""Decline: a pass, planner or reader refusing, with the reason (typed, never a bare string).

Planners and readers return ``Plan | Decline``; the reason reaches the report word for word, so
"why did this rule not fire?" is answered there and in tests (onnxscript's ``MatchResult.fail``).
Inside a pass, ``need`` turns a Decline into the ``Declined`` exception that ends the attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Decline:
    reason: str

    def __str__(self) -> str:
        return self.reason

    def within(self, who: str) -> "Decline":
        """The same reason, said by ``who`` (a pass or lowering name)."""
        return Decline(f"{who}: {self.reason}")


class Declined(Exception):
    """Raised inside a pass to stop one attempt; carries the Decline."""

    def __init__(self, decline: "Decline | str"):
        self.decline = decline if isinstance(decline, Decline) else Decline(decline)
        super().__init__(self.decline.reason)


def need(result: "T | Decline") -> T:
    """``result`` itself, or raise Declined when it is a Decline."""
    if isinstance(result, Decline):
        raise Declined(result)
    return result
