"""SparseConv's literal definition in standard ONNX, the reference every sparse rewrite is verified
against: scatter the features into the dense grid, run ONNX's own dense Conv, and sample it at the
output sites. The output sites come from the dense grid too (submanifold: the input sites; regular:
the non-zeros of the occupancy convolved with an all-ones kernel, in NonZero's row-major order),
so neither the values nor the site set depend on the rulebook.

It holds the whole grid ([B, Cin, *spatial_shape]) in memory: a verification tool for test-sized
grids, not a way to run sparse convs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .emit import Emitter
from .schema import INVERSE_OP_TYPE, SparseConvAttrs, SparseConvError


def reference_nodes(features: gs.Tensor, coords: gs.Tensor, weight: gs.Tensor,
                    bias: gs.Tensor | None, attrs: SparseConvAttrs, out_features: gs.Tensor,
                    out_coords: gs.Tensor | None, e: Emitter) -> list[gs.Node]:
    rank = attrs.rank
    c64 = e.cast64(coords, "coords64")
    batch = e.column(c64, 0, "batch")
    top = e.op("ReduceMax", [e.op("Concat", [batch, e.i64("zero", [0])], "batch_or_0", axis=0)],
               "batch_max", keepdims=1)
    batches = e.op("Add", [top, e.i64("one", [1])], "batches")
    channels = e.op("Shape", [features], "channels", start=1, end=2)
    grid = e.i64("grid", attrs.spatial_shape)
    zeros = e.zeros(e.op("Concat", [batches, grid, channels], "dense_shape", axis=0), features,
                    "dense_zeros")
    scattered = e.op("ScatterND", [zeros, c64, features], "scatter")
    dense = e.op("Transpose", [scattered], "to_nc", perm=[0, rank + 1, *range(1, rank + 1)])
    conv_attrs = {"kernel_shape": list(attrs.kernel_shape), "strides": list(attrs.strides),
                  "pads": list(attrs.pads), "dilations": list(attrs.dilations)}
    y = e.op("Conv", [dense, weight, *([bias] if bias is not None else [])], "dense_conv",
             **conv_attrs)
    y_last = e.op("Transpose", [y], "to_channels_last", perm=[0, *range(2, rank + 2), 1])
    if attrs.submanifold:
        sites = c64
        if out_coords is not None:
            e.op("Identity", [coords], "out_coords", out=out_coords)
    else:
        one = onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [1.0])
        ones = e.op("ConstantOfShape", [e.op("Concat", [e.rows(coords, "n"), e.i64("c1", [1])],
                                             "ones_shape", axis=0)], "ones", value=one)
        occ_zeros = e.op("ConstantOfShape", [e.op("Concat", [batches, grid, e.i64("c1b", [1])],
                                                  "occ_shape", axis=0)], "occ_zeros")
        occ = e.op("ScatterND", [occ_zeros, c64, ones], "occupancy")
        occ = e.op("Transpose", [occ], "occ_nc", perm=[0, rank + 1, *range(1, rank + 1)])
        kernel = e.const("ones_kernel", np.ones((1, 1, *attrs.kernel_shape), np.float32))
        reach = e.op("Conv", [occ, kernel], "reach", **conv_attrs)
        active = e.op("Greater", [e.op("Squeeze", [reach, e.i64("axis1", [1])], "reach_sites"),
                                  e.const("half", np.float32(0.5))], "reached")
        sites = e.op("Transpose", [e.op("NonZero", [active], "sites_t")], "sites", perm=[1, 0])
        if out_coords is not None:
            e.op("CastLike", [sites, coords], "out_coords", out=out_coords)
    e.op("GatherND", [y_last, sites], "sample", out=out_features)
    return e.nodes


def inverse_reference_nodes(features: gs.Tensor, coords: gs.Tensor, out_coords: gs.Tensor,
                            weight: gs.Tensor, bias: gs.Tensor | None, attrs: SparseConvAttrs,
                            out_features: gs.Tensor, e: Emitter) -> list[gs.Node]:
    """SparseInverseConv literally: the coarse features scattered onto the strided conv's output
    grid, ONNX's ConvTranspose (W's first two axes swapped) back onto the fine grid, sampled at
    the given fine sites."""
    rank = attrs.rank
    c64, f64 = e.cast64(coords, "coords64"), e.cast64(out_coords, "out_coords64")
    both = e.op("Concat", [e.column(c64, 0, "batch"), e.column(f64, 0, "out_batch"),
                           e.i64("zero", [0])], "batches_or_0", axis=0)
    batches = e.op("Add", [e.op("ReduceMax", [both], "batch_max", keepdims=1), e.i64("one", [1])],
                   "batches")
    channels = e.op("Shape", [features], "channels", start=1, end=2)
    coarse = e.i64("coarse_grid", attrs.out_spatial_shape)
    zeros = e.zeros(e.op("Concat", [batches, coarse, channels], "dense_shape", axis=0), features,
                    "dense_zeros")
    scattered = e.op("ScatterND", [zeros, c64, features], "scatter")
    dense = e.op("Transpose", [scattered], "to_nc", perm=[0, rank + 1, *range(1, rank + 1)])
    w_t = e.op("Transpose", [weight], "w_in_out", perm=[1, 0, *range(2, rank + 2)])
    y = e.op("ConvTranspose", [dense, w_t], "dense_conv_transpose",
             kernel_shape=list(attrs.kernel_shape), strides=list(attrs.strides),
             dilations=list(attrs.dilations), pads=[*attrs.pads_begin, *([0] * rank)])
    made = [(o - 1) * s - p + d * (k - 1) + 1 for o, s, p, d, k in zip(
        attrs.out_spatial_shape, attrs.strides, attrs.pads_begin, attrs.dilations,
        attrs.kernel_shape)]
    want = list(attrs.spatial_shape)
    if any(m > w for m, w in zip(made, want)):      # the window reaches past the fine grid
        y = e.op("Slice", [y, e.i64("crop_start", [0] * rank), e.i64("crop_end", want),
                           e.i64("crop_axes", list(range(2, rank + 2)))], "crop")
    if any(m < w for m, w in zip(made, want)):      # fine sites no window reaches get 0 (+ B)
        grow = [max(0, w - m) for m, w in zip(made, want)]
        y = e.op("Pad", [y, e.i64("grow", [0, 0, *([0] * rank), 0, 0, *grow])], "grow")
    y_last = e.op("Transpose", [y], "to_channels_last", perm=[0, *range(2, rank + 2), 1])
    sampled = e.op("GatherND", [y_last, f64], "sample",
                   out=None if bias is not None else out_features)
    if bias is not None:
        e.op("Add", [sampled, bias], "bias", out=out_features)
    return e.nodes


def reference_model(features: np.ndarray, coords: np.ndarray, weight: np.ndarray,
                    bias: np.ndarray | None, attrs: SparseConvAttrs,
                    opset: int = 17) -> onnx.ModelProto:
    """A model of inputs (features, coordinates) computing the dense reference with these
    constant weights."""
    from ..naming import Names
    f = gs.Variable("features", dtype=features.dtype, shape=["N", features.shape[1]])
    c = gs.Variable("coordinates", dtype=coords.dtype, shape=["N", coords.shape[1]])
    of = gs.Variable("out_features", dtype=features.dtype)
    oc = gs.Variable("out_coordinates", dtype=coords.dtype)
    e = Emitter(Names(["features", "coordinates", "out_features", "out_coordinates"]).fresh,
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
    from ..verify import run
    features, coords = np.asarray(features), np.asarray(coords)
    model = reference_model(features, coords, np.asarray(weight),
                            None if bias is None else np.asarray(bias), attrs)
    out = run(model, {"features": features, "coordinates": coords})
    return out["out_features"], out["out_coordinates"]


def inverse_model(features: np.ndarray, coords: np.ndarray, out_coords: np.ndarray,
                  weight: np.ndarray, bias: np.ndarray | None, attrs: SparseConvAttrs,
                  opset: int = 17) -> onnx.ModelProto:
    """The dense reference of one SparseInverseConv with these constant weights, as a model of
    inputs (features, coordinates, out_coordinates)."""
    from ..naming import Names
    f = gs.Variable("features", dtype=features.dtype, shape=["M", features.shape[1]])
    c = gs.Variable("coordinates", dtype=coords.dtype, shape=["M", coords.shape[1]])
    oc = gs.Variable("out_coordinates", dtype=out_coords.dtype, shape=["N", out_coords.shape[1]])
    of = gs.Variable("out_features", dtype=features.dtype)
    e = Emitter(Names(["features", "coordinates", "out_coordinates", "out_features"]).fresh,
                "reference")
    w = e.const("W", weight.astype(features.dtype))
    b = e.const("B", bias.astype(features.dtype)) if bias is not None else None
    nodes = inverse_reference_nodes(f, c, oc, w, b, attrs, of, e)
    graph = gs.Graph(nodes=nodes, inputs=[f, c, oc], outputs=[of])
    return gs.export_onnx(graph, do_type_check=False,
                          opset_imports=[onnx.helper.make_opsetid("", opset)])


def dense_inverse_reference(features, coords, out_coords, weight, bias,
                            attrs: SparseConvAttrs) -> np.ndarray:
    """A SparseInverseConv's output features by its dense reference on onnxruntime."""
    from ..verify import run
    model = inverse_model(np.asarray(features), np.asarray(coords), np.asarray(out_coords),
                          np.asarray(weight), None if bias is None else np.asarray(bias), attrs)
    return run(model, {"features": np.asarray(features), "coordinates": np.asarray(coords),
                       "out_coordinates": np.asarray(out_coords)})["out_features"]


def node_reference(node: gs.Node, names) -> list[gs.Node]:
    """The reference nodes replacing one SparseConv or SparseInverseConv node
    (``ops.reference.REFERENCES``)."""
    from .lower import node_attrs, optional_input
    if node.op == INVERSE_OP_TYPE:
        if len(node.inputs) < 4:
            raise SparseConvError(f"{node.op} {node.name!r}: needs features, coordinates, "
                                  "out_coordinates and W")
        return inverse_reference_nodes(node.inputs[0], node.inputs[1], node.inputs[2],
                                       node.inputs[3], optional_input(node, 4), node_attrs(node),
                                       node.outputs[0], Emitter(names, f"{node.name}/reference"))
    if len(node.inputs) < 3:
        raise SparseConvError(f"SparseConv {node.name!r}: needs features, coordinates and W")
    out_coords = node.outputs[1] if len(node.outputs) > 1 and node.outputs[1].name else None
    return reference_nodes(node.inputs[0], node.inputs[1], node.inputs[2], optional_input(node, 3),
                           node_attrs(node), node.outputs[0], out_coords,
                           Emitter(names, f"{node.name}/reference"))
