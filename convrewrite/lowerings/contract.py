"""What a lowering is: the rules it fixes, a planner that makes every choice from a ConvSpec and
the target, and an emitter written once against the Builder (``build.builder``).

A lowering is one registered object (``register``), like a rule of onnxscript's rewriter:

* ``fixes``: the rules it fixes, named from the rule table (``rules.rules_named``);
* ``plan(spec, target)``: a pure function, tested without any IR, that returns ``Planned`` (the
  form chosen, every alternative weighed, the words for the report, the tolerance class, the
  cost after) or a ``Decline`` with the reason. Whatever depends on the target (the ops it
  allows, its limits, the rewrite options) is decided here, never in the emitter;
* ``emit(b, site, planned)``: builds the replacement with the Builder and returns the tensor that
  stands for the conv's output. It decides nothing: the same emitter serves ONNX and Relax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..build.builder import Builder, ConvSite
from ..conv import ConvSpec
from ..decline import Decline
from ..plan.limits import missing_ops
from ..rules import LOWERING_ORDER, add_fixer
from ..target import Target

__all__ = ["LOWERINGS", "Lowering", "Planned", "missing_ops", "register"]


@dataclass(frozen=True)
class Planned:
    """A planner's decision: what the emitter builds and what the record says."""

    detail: Any                     # the family's plan, as its emitter reads it
    rewrite: str                    # how, in words, with the alternatives it beat
    tolerance: str                  # "exact" (same arithmetic) or "reassociating" (sums regrouped)
    macs_factor: float = 1.0        # MACs after over MACs before
    params_after: int | None = None  # None: as many as before


class Lowering:
    name: ClassVar[str] = ""
    fixes: ClassVar[frozenset[str]] = frozenset()

    def plan(self, spec: ConvSpec, target: Target) -> "Planned | Decline":
        raise NotImplementedError

    def emit(self, b: Builder, site: ConvSite, planned: Planned):
        raise NotImplementedError


LOWERINGS: dict[str, type[Lowering]] = {}


def register(cls: type[Lowering]) -> type[Lowering]:
    """Add a lowering to the registry; its name must be in ``rules.LOWERING_ORDER``."""
    add_fixer(cls.name, cls.fixes, LOWERING_ORDER, "rules.LOWERING_ORDER")
    LOWERINGS[cls.name] = cls
    return cls
