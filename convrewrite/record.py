"""What one rewrite did (the unit of the report, the JSON output and the local verification), and
what the target still rejects after the pipeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .rules import Violation


@dataclass
class Record:
    node: str                       # the original node's name
    op: str
    pass_name: str
    rules: list[Violation]          # what the target rejected and this rewrite fixed
    rewrite: str                    # how, in words ("4 in x 1 out chunks, chain sum")
    input_name: str                 # the replacement reads this tensor ...
    output_name: str                # ... and writes this one, like the original node
    tolerance: str                  # "exact" (same arithmetic) or "reassociating" (sums regrouped)
    macs_before: int | None = None
    macs_after: int | None = None
    params_before: int = 0
    params_after: int = 0
    nodes_before: int = 1
    nodes_after: int = 1
    verify: dict | None = None      # filled by verification
    notes: list[str] = field(default_factory=list)
    more_outputs: list[str] = field(default_factory=list)   # a rewritten region's other outputs
    more_inputs: list[str] = field(default_factory=list)    # ... and other data inputs (SparseConv
    #                                                         coordinates, a mask)
    before: Any = field(default=None, repr=False)   # the original node alone, as a ModelProto

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("before")
        out["rules"] = [v.to_dict() for v in self.rules]
        return out


@dataclass
class Remaining:
    """A conv the target still rejects after the pipeline, with every pass's reason."""

    node: str
    op: str
    describe: str
    violations: list[Violation]
    reasons: list[str]

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "conv": self.describe,
                "violations": [v.to_dict() for v in self.violations], "reasons": self.reasons}
