"""Limits on every op's tensors, not only a conv's: ``max_tensor_dim`` (no extent above it in any
tensor an op reads or writes) and ``max_tensor_batch`` (no 4-D or higher feature map an op reads
with a larger batch). Vela 3 checks both on every NPU op (tflite_supported_operators.py's
generic constraints "Tensor dimensions must be in the range [1, 65535]" and "IFM Tensor batch
size must be 1"), the batch one on the op's input feature maps only, and not on ops that only
cut or view a tensor or on FullyConnected and Softmax (its generic_constraints_exceptions).
Convs are judged by their own rules (``conv.max_dim``, ``conv.max_batch``); the same numbers
there make the conv lowerings cut them. Unknown extents pass: only what can be proven is named.
A symbolic batch counts as 1, as the target runs the model (onnx2tf fixes it, Vela takes
batch 1): a TorchScript export's ``N*128`` (``batch_shapes``: attention windows folded into the
batch) is 128 there.
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


def on_target(dim) -> int | None:
    """The extent as the target runs it: an int as it is, the batch symbol times k
    (``batch_shapes``' 'N*k') as k; None for any other symbol (unknown: it passes)."""
    if isinstance(dim, int):
        return dim
    if isinstance(dim, str):
        head, star, k = dim.partition("*")
        if star and head and k.isdigit():
            return int(k)
    return None


def merged_batch(dim: str, extent: int) -> str:
    """The batch symbol's multiple ``dim`` ('N' or 'N*k') merged with axes of ``extent``
    elements at the target's batch: 'N*(k*extent)' (``extent`` counts k already)."""
    head = dim.partition("*")[0]
    return head if extent == 1 else f"{head}*{extent}"


def target_shape(shape) -> list[int | None]:
    return [on_target(d) for d in shape]


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
        batch = on_target(shape[0]) if shape else None
        if shape is not None and len(shape) >= 4 and batch is not None and batch > limit:
            return TensorOffence(Violation(
                "max_tensor_batch", batch, limit,
                f"{node.op} reads {tensor.name} of batch {shape[0]}"
                + ("" if batch == shape[0] else f" ({batch} at the target's batch 1)")
                + f"; the target runs batch <= {limit} on every op"), tensor, 0)
    return None


def concat_lower_bound(node: gs.Node, extents: list[int | None]) -> list[int | None]:
    """A Concat's output extents with an unknown joined axis bounded below by the sum of its
    inputs' known extents there: at least that long, whatever the unknown ones are."""
    if node.op != "Concat" or not extents:
        return extents
    axis = node.attrs.get("axis", 0) % len(extents)
    if extents[axis] is not None:
        return extents
    known = [target_shape(t.shape)[axis] for t in node.inputs
             if t.shape is not None and len(t.shape) == len(extents)]
    bounded = list(extents)
    bounded[axis] = sum(k for k in known if k is not None) or None
    return bounded


def dim_offence(node: gs.Node, limit: int | None) -> TensorOffence | None:
    """The first tensor the node reads or writes with an extent over ``limit``."""
    if limit is None or node.op in CONV_OPS:
        return None
    for verb, tensors in (("writes", node.outputs), ("reads", node.inputs)):
        for tensor in tensors:
            shape = tensor.shape if tensor.name else None
            if shape is None:
                continue
            extents = target_shape(shape)
            if verb == "writes":
                extents = concat_lower_bound(node, extents)
            big = [a for a, d in enumerate(extents) if d is not None and d > limit]
            if big:
                axis = max(big, key=lambda a: extents[a])
                dims = "x".join(str(d) if on_target(d) is not None or e is None else
                                f"{d} (at least {e})" for d, e in zip(shape, extents))
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
