"""SparseConv's dense reference as a model of its own, run on onnxruntime: tests and benchmarks
compare our sparse forms with it. The definition is ``ops.sparse_conv.reference_nodes``: scatter
the features into the dense grid, run ONNX's own dense Conv, and sample it at the output sites.
The output sites come from the dense grid too (submanifold: the input sites; regular: the
non-zeros of the occupancy convolved with an all-ones kernel, in NonZero's row-major order), so
neither the values nor the site set depend on the rulebook.

It holds the whole grid ([B, Cin, *spatial_shape]) in memory: a verification tool for test-sized
grids, not a way to run sparse convs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx import OnnxBuilder
from ..naming import Names
from ..ops.sparse_conv import SparseConvAttrs, reference_nodes
from ..verify import run


def reference_model(features: np.ndarray, coords: np.ndarray, weight: np.ndarray,
                    bias: np.ndarray | None, attrs: SparseConvAttrs,
                    opset: int = 17) -> onnx.ModelProto:
    """A model of inputs (features, coordinates) computing the dense reference with these
    constant weights."""
    f = gs.Variable("features", dtype=features.dtype, shape=["N", features.shape[1]])
    c = gs.Variable("coordinates", dtype=coords.dtype, shape=["N", coords.shape[1]])
    of = gs.Variable("out_features", dtype=features.dtype)
    oc = gs.Variable("out_coordinates", dtype=coords.dtype)
    e = OnnxBuilder(Names(["features", "coordinates", "out_features", "out_coordinates"]).fresh,
                "reference")
    w = e.const("W", weight.astype(features.dtype))
    b = e.const("B", bias.astype(features.dtype)) if bias is not None else None
    nodes = reference_nodes(f, c, w, b, attrs, of, oc, e)
    graph = gs.Graph(nodes=nodes, inputs=[f, c], outputs=[of, oc])
    return gs.export_onnx(graph, do_type_check=False,
                          opset_imports=[onnx.helper.make_opsetid("", opset)])


def dense_reference(features, coords, weight, bias, attrs: SparseConvAttrs
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(out_features, out_coordinates) by the dense reference on onnxruntime."""
    features, coords = np.asarray(features), np.asarray(coords)
    model = reference_model(features, coords, np.asarray(weight),
                            None if bias is None else np.asarray(bias), attrs)
    out = run(model, {"features": features, "coordinates": coords})
    return out["out_features"], out["out_coordinates"]
