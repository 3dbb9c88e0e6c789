"""Ops of our own ONNX domain: what exporters cannot express in standard ONNX, each in a module of
its own with its schema, a numpy reference, and its literal standard-ONNX definition registered
with ``register_reference`` (onnxruntime runs the original side of every check through it)."""

from __future__ import annotations

from typing import Callable

DOMAIN = "ai.convrewrite"
DOMAIN_VERSION = 1

# op type -> fn(node, fresh_name) -> the standard-ONNX nodes computing the node's outputs
REFERENCES: dict[str, Callable] = {}


def register_reference(op_type: str):
    """Register an op's standard-ONNX definition (``ops.reference.standard_reference`` uses it)."""
    def register(fn: Callable) -> Callable:
        REFERENCES[op_type] = fn
        return fn
    return register
