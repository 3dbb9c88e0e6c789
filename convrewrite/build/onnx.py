"""Writing ONNX nodes (onnx-graphsurgeon): fresh readable names under one stem, int64 constants,
one line per node. The sparse lowerings, SparseConv's dense reference and the dense->sparse pass
write their nodes through it."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

INT64 = onnx.TensorProto.INT64


class OnnxBuilder:
    def __init__(self, fresh: Callable[[str], str], stem: str):
        self.fresh = fresh
        self.stem = stem
        self.nodes: list[gs.Node] = []

    def const(self, name: str, value) -> gs.Constant:
        return gs.Constant(self.fresh(f"{self.stem}/{name}"), np.asarray(value))

    def i64(self, name: str, values) -> gs.Constant:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list, name: str, out: gs.Tensor | None = None,
           dtype=None, shape=None, **attrs) -> gs.Tensor:
        """One node of one output (``out`` when given, else a fresh variable)."""
        node_name = self.fresh(f"{self.stem}/{name}")
        result = out if out is not None else gs.Variable(self.fresh(f"{node_name}.out"),
                                                         dtype=dtype, shape=shape)
        self.nodes.append(gs.Node(op_type, node_name, attrs, list(inputs), [result]))
        return result

    def multi(self, op_type: str, inputs: list, name: str, outputs: int, **attrs) -> list[gs.Tensor]:
        node_name = self.fresh(f"{self.stem}/{name}")
        results = [gs.Variable(self.fresh(f"{node_name}.out{i}")) for i in range(outputs)]
        self.nodes.append(gs.Node(op_type, node_name, attrs, list(inputs), results))
        return results

    def zeros(self, shape: gs.Tensor, like: gs.Tensor, name: str, value: float = 0.0) -> gs.Tensor:
        """A tensor of ``shape`` (a runtime int64 shape) filled with ``value``, ``like``'s dtype."""
        filled = self.op("ConstantOfShape", [shape], f"{name}_f32",
                         value=onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [value]))
        return self.op("CastLike", [filled, like], name)

    def cast64(self, x: gs.Tensor, name: str) -> gs.Tensor:
        return self.op("Cast", [x], name, dtype=np.int64, to=INT64)

    def column(self, x: gs.Tensor, index: int, name: str) -> gs.Tensor:
        """Column ``index`` of a 2-D tensor, as 1-D."""
        return self.op("Gather", [x, self.i64(f"{name}_at", index)], name, axis=1)

    def rows(self, x: gs.Tensor, name: str) -> gs.Tensor:
        """[1] int64: the number of rows of ``x``."""
        return self.op("Shape", [x], name, dtype=np.int64, start=0, end=1)
