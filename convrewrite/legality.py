"""Legality: which rules of the table (``rules.RULES``) a conv breaks on a target.

A pure function of (ConvSpec, Target); the pipeline asks it what is wrong, and each lowering says
which of the rules it fixes.
"""

from __future__ import annotations

from .conv import ConvSpec
from .rules import Violation, conv_checks
from .target import Target


def check(spec: ConvSpec, target: Target) -> list[Violation]:
    """Every rule the target states that this conv breaks, in the table's order."""
    found = (rule.check(spec, target.conv) for rule in conv_checks())
    return [v for v in found if v is not None]
