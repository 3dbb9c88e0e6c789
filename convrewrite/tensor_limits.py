"""Limits on every op's tensors, not only a conv's: ``max_tensor_dim`` (no extent above it in any
tensor an op reads or writes) and ``max_tensor_batch`` (no 4-D or higher feature map an op reads
with a larger batch). Vela 3 checks both on every NPU op (tflite_supported_operators.py's
generic constraints "Tensor dimensions must be in the range [1, 65535]" and "IFM Tensor batch
size must be 1"), the batch one on the op's input feature maps only, and not on ops that only
cut or view a tensor or on FullyConnected and Softmax (its generic_constraints_exceptions).
Convs are judged by their own rules (``conv.max_dim``, ``conv.max_batch``); the same numbers
there make the conv lowerings cut them. Unknown extents pass: only what can be proven is named.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from .conv import CONV_OPS
from .rules import Violation

CUT_OPS = frozenset({"Split", "Slice"})
VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Shape", "Identity"})
# Ops whose input batch the engine does not limit (Vela 3: split ops, Reshape, Squeeze, Shape,
# FullyConnected, Softmax).
BATCH_FREE_OPS = CUT_OPS | VIEW_OPS | {"Gemm", "MatMul", "Softmax"}


@dataclass(frozen=True)
class TensorOffence:
    violation: Violation
    tensor: gs.Tensor           # the tensor that breaks it
    axis: int                   # the axis over the limit


def data_inputs(node: gs.Node) -> list[gs.Tensor]:
    """The feature maps a node reads: named inputs that are not constants."""
    return [t for t in node.inputs if t.name and not isinstance(t, gs.Constant)]


def batch_offence(node: gs.Node, limit: int | None) -> TensorOffence | None:
    """The first of the node's two input feature maps (4-D or higher) with a batch over
    ``limit``, for ops the limit applies to."""
    if limit is None or node.op in BATCH_FREE_OPS or node.op in CONV_OPS:
        return None
    for tensor in data_inputs(node)[:2]:
        shape = tensor.shape
        if shape is not None and len(shape) >= 4 and isinstance(shape[0], int) \
                and shape[0] > limit:
            return TensorOffence(Violation(
                "max_tensor_batch", shape[0], limit,
                f"{node.op} reads {tensor.name} of batch {shape[0]}; the target runs batch "
                f"<= {limit} on every op"), tensor, 0)
    return None


def dim_offence(node: gs.Node, limit: int | None) -> TensorOffence | None:
    """The first tensor the node reads or writes with an extent over ``limit``."""
    if limit is None or node.op in CONV_OPS:
        return None
    for verb, tensors in (("writes", node.outputs), ("reads", node.inputs)):
        for tensor in tensors:
            shape = tensor.shape if tensor.name else None
            if shape is None:
                continue
            big = [a for a, d in enumerate(shape) if isinstance(d, int) and d > limit]
            if big:
                axis = max(big, key=lambda a: shape[a])
                dims = "x".join(str(d) for d in shape)
                return TensorOffence(Violation(
                    "max_tensor_dim", tuple(shape), limit,
                    f"{node.op} {verb} {tensor.name} ({dims}); every tensor dimension must be "
                    f"at most {limit}"), tensor, axis)
    return None


def tensor_offences(node: gs.Node, target) -> list[TensorOffence]:
    found = (batch_offence(node, target.max_tensor_batch),
             dim_offence(node, target.max_tensor_dim))
    return [f for f in found if f is not None]


def limits_tensors(target) -> bool:
    return target.max_tensor_batch is not None or target.max_tensor_dim is not None


def interface_reason(offence: TensorOffence, graph: gs.Graph) -> str | None:
    """Why no rewrite can fix it, where the tensor is the model's own input or output."""
    for kind, ends in (("input", graph.inputs), ("output", graph.outputs)):
        if any(offence.tensor is t for t in ends):
            return (f"{offence.tensor.name} is the model's own {kind}: no rewrite narrows the "
                    "model's interface")
    return None
