"""Ops of our own ONNX domain: what exporters cannot express in standard ONNX, with a schema and a
numpy reference each, and a lowering to standard ONNX that the passes emit."""

DOMAIN = "ai.convrewrite"
DOMAIN_VERSION = 1
