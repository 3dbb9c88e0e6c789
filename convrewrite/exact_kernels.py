"""Run integer convs on onnxruntime the way ONNX defines them, whatever the CPU.

onnxruntime's x86 kernel for a QLinearConv with a uint8 input and an int8 weight sums pairs of
products in int16 (VPMADDUBSW), which saturates on CPUs without VNNI: its result is then not the
op's ONNX semantics (measured with onnxruntime 1.32 on this AVX2 CPU: 210 of 360 outputs off by up
to 45 on a full-range 12-channel 3x3 conv; onnxruntime's quantization guide documents the
saturation). A check that compares a split (ConvInteger chunks summed in int32, which is exact)
with such an original would blame the rewrite for one CPU's kernel, and pass on another CPU.

The same conv with its weight and weight zero point moved by +128 into uint8 computes the very same
``w - w_zero_point`` and runs on the uint8 x uint8 kernel, which does not saturate. Verification
runs both sides of every check through this, so that it compares ONNX semantics; the model a user
gets back is never changed by it.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph import copy_model
from .walk import proto_graphs

WEIGHT, WEIGHT_ZERO_POINT, INPUT_ZERO_POINT = 3, 5, 2


def exact_integer_kernels(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every uint8-input, int8-weight QLinearConv moved to uint8 weights (the model
    itself where there is none: no copy)."""
    if not _any_saturating(model):
        return model
    model = copy_model(model)
    for graph, constants in _scopes(model):
        for node in [n for n in graph.node if _saturating(n, constants)]:
            for index in (WEIGHT, WEIGHT_ZERO_POINT):
                node.input[index] = _as_uint8(graph, node.input[index], constants)
    return model


def _any_saturating(model: onnx.ModelProto) -> bool:
    """Whether any graph holds a saturating QLinearConv: each graph's constants are mapped once
    (mapping them per node was quadratic: 8.8 of 18 s of a verified k210 rewrite of a 1-D net with
    303 records, three sessions), and not at all in a model without a QLinearConv."""
    if not any(n.op_type == "QLinearConv" for graph in _graphs(model) for n in graph.node):
        return False
    return any(_saturating(node, constants) for graph, constants in _scopes(model)
               for node in graph.node)


def _graphs(model: onnx.ModelProto) -> Iterator:
    """The main graph, the functions, and every If/Loop/Scan body in them at any depth."""
    return (graph for graph, _ in proto_graphs(model, lambda graph, outer: None))


def _scopes(model: onnx.ModelProto) -> Iterator[tuple[object, dict[str, TensorProto]]]:
    """Every graph with the constants it reads: its own, and an If/Loop/Scan body's enclosing
    graphs' where it does not shadow their names (a function reads only its own)."""
    def constants(graph, outer):
        shadowed = {getattr(i, "name", i) for i in graph.input} | {
            o for n in graph.node for o in n.output}
        return {**{k: v for k, v in (outer or {}).items() if k not in shadowed},
                **_constants(graph)}
    return proto_graphs(model, constants)


def _constants(graph) -> dict[str, TensorProto]:
    """Initializers and Constant outputs of one graph, by name."""
    found = {t.name: t for t in getattr(graph, "initializer", [])}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = node.attribute[0].t
    return found


def _saturating(node: onnx.NodeProto, constants: dict[str, TensorProto]) -> bool:
    if node.op_type != "QLinearConv" or node.domain not in ("", "ai.onnx"):
        return False
    if len(node.input) <= WEIGHT_ZERO_POINT:
        return False
    x_zp, w_zp = (constants.get(node.input[i]) for i in (INPUT_ZERO_POINT, WEIGHT_ZERO_POINT))
    return (x_zp is not None and w_zp is not None and x_zp.data_type == TensorProto.UINT8
            and w_zp.data_type == TensorProto.INT8)


def _as_uint8(graph, name: str, constants: dict[str, TensorProto]) -> str:
    """The int8 tensor ``name`` plus 128 as uint8: folded where it is a constant of this graph,
    else three nodes (a weight known only at run time, or one from an outer scope)."""
    moved = f"{name}__uint8"
    if moved in constants or any(moved in n.output for n in graph.node):
        return moved
    if name in constants and isinstance(graph, onnx.GraphProto):
        value = numpy_helper.to_array(constants[name]).astype(np.int16) + 128
        constants[moved] = numpy_helper.from_array(value.astype(np.uint8), moved)
        graph.initializer.append(constants[moved])
        return moved
    wide, offset = f"{moved}/int32", f"{moved}/offset"
    nodes = [helper.make_node("Constant", [], [offset],
                              value=numpy_helper.from_array(np.array(128, np.int32))),
             helper.make_node("Cast", [name], [wide], to=TensorProto.INT32),
             helper.make_node("Add", [wide, offset], [f"{moved}/sum"]),
             helper.make_node("Cast", [f"{moved}/sum"], [moved], to=TensorProto.UINT8)]
    first_user = next(i for i, n in enumerate(graph.node) if name in n.input)
    for node in reversed(nodes):
        graph.node.insert(first_user, node)
    return moved
