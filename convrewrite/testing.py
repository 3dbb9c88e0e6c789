"""A one-line equivalence assertion for users' own test suites."""

from __future__ import annotations

from .api import verify
from .verify import Tolerance


def assert_equivalent(original, rewritten, *, inputs=None, seed: int = 0, atol: float | None = None,
                      rtol: float | None = None, kind: str = "reassociating",
                      input_shapes: dict | None = None) -> dict:
    """Fail (AssertionError with the worst difference) unless both models agree on onnxruntime.

    Returns the end-to-end statistics so a test can assert more (e.g. ``["bit_exact"]``).
    """
    report = verify(original, rewritten, inputs=inputs, seed=seed, input_shapes=input_shapes,
                    tolerance=Tolerance(atol=atol, rtol=rtol), kind=kind)
    stats = report.end_to_end
    if not stats["passed"]:
        if "error" in stats:
            raise AssertionError(f"models differ: {stats['error']}")
        raise AssertionError(
            f"models differ at {stats['worst_output']}{stats['worst_index']}: max abs "
            f"{stats['max_abs']:.3g} (reference {stats['reference_at_worst']:.6g}, got "
            f"{stats['actual_at_worst']:.6g}); {stats['mismatches']} of {stats['elements']} "
            f"elements outside atol {stats['atol']:.3g} + rtol {stats['rtol']:.3g}")
    return stats
