"""Tiny hand-built QLinearConv / ConvInteger models of any geometry, and their ONNX semantics in
int64 numpy (the reference the integer lowerings' tests compare onnxruntime's results with)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_TYPE = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


def _zero_point(rng, dtype, size=None):
    info = np.iinfo(dtype)
    return rng.integers(info.min // 2, info.max // 2, size=size, endpoint=True).astype(dtype)


def integer_conv(op, kernel=(3, 3), strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                 cin=4, cout=5, size=(9, 9), x_dtype=np.uint8, w_dtype=np.int8,
                 per_channel=False, varying_zero_points=False, bias=False, group=1, batch=1,
                 seed=0):
    """One QLinearConv or ConvInteger on a [batch, cin, *size] input, random parameters (a uint8
    weight's zero point near 128; ``varying_zero_points``: one per output channel)."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(w_dtype)
    w = rng.integers(info.min, info.max, (cout, cin // group, *kernel),
                     endpoint=True).astype(w_dtype)
    n = cout if per_channel else 1
    shape = (cout,) if per_channel else ()
    centre = 128 if w_dtype == np.uint8 else 0
    offsets = rng.integers(-4, 4, n, endpoint=True) if varying_zero_points else np.zeros(n, int)
    inits = {"w": w, "xz": _zero_point(rng, x_dtype),
             "wz": (offsets + centre).astype(w_dtype).reshape(shape)}
    attrs = dict(pads=list(pads), strides=list(strides), dilations=list(dilations),
                 kernel_shape=list(kernel), group=group)
    if op == "QLinearConv":
        inits.update(xs=np.float32(rng.uniform(0.005, 0.05)),
                     ws=rng.uniform(0.001, 0.02, n).astype(np.float32).reshape(shape),
                     ys=np.float32(rng.uniform(0.02, 0.3)), yz=_zero_point(rng, x_dtype))
        names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
        if bias:
            inits["B"] = rng.integers(-3000, 3000, cout).astype(np.int32)
            names.append("B")
        y_type = ONNX_TYPE[np.dtype(x_dtype)]
    else:
        names, y_type = ["x", "w", "xz", "wz"], TensorProto.INT32
    rank = len(kernel)
    out = [(n + pads[i] + pads[i + rank] - (k - 1) * d - 1) // s + 1
           for i, (n, k, s, d) in enumerate(zip(size, kernel, strides, dilations))]
    node = helper.make_node(op, names, ["y"], name="qconv", **attrs)
    graph = helper.make_graph(
        [node], "q", [helper.make_tensor_value_info("x", ONNX_TYPE[np.dtype(x_dtype)],
                                                    [batch, cin, *size])],
        [helper.make_tensor_value_info("y", y_type, [batch, cout, *out])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


def random_input(model: onnx.ModelProto, seed=1) -> np.ndarray:
    """A full-range input of the model's integer type and shape."""
    tensor = model.graph.input[0].type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    info = np.iinfo(dtype)
    shape = [d.dim_value for d in tensor.shape.dim]
    return np.random.default_rng(seed).integers(info.min, info.max, shape,
                                                endpoint=True).astype(dtype)


def exact_integer_conv(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's one integer conv (2-D) as ONNX defines it, in int64: the input padded with
    its zero point, sum of (x - x_zp) * (w - w_zp), then (QLinearConv) plus the bias, times
    x_scale * w_scale / y_scale in float32, rounded half to even, plus y_zp, saturated."""
    p = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = model.graph.node[0]
    attrs = {a.name: list(a.ints) for a in node.attribute}
    kernel, strides, dilations, pads = (attrs[k] for k in ("kernel_shape", "strides",
                                                          "dilations", "pads"))
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    w = p["w"].astype(np.int64) - p["wz"].astype(np.int64).reshape(-1, 1, 1, 1)
    xp = np.pad(x.astype(np.int64) - int(p["xz"]),
                ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out = [(n - (k - 1) * d - 1) // s + 1
           for n, k, s, d in zip(xp.shape[2:], kernel, strides, dilations)]
    acc = 0
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            window = xp[:, :, i * dilations[0]::strides[0], j * dilations[1]::strides[1]]
            window = window[:, :, :out[0], :out[1]]
            cin, cout = window.shape[1] // group, w.shape[0] // group
            acc = acc + np.concatenate([np.einsum(
                "nchw,oc->nohw", window[:, g * cin:(g + 1) * cin], w[g * cout:(g + 1) * cout, :, i, j])
                for g in range(group)], axis=1)
    if node.op_type == "ConvInteger":
        return acc.astype(np.int32)
    if "B" in p:
        acc = acc + p["B"].reshape(1, -1, 1, 1)
    scale = (p["xs"].astype(np.float32) * p["ws"].astype(np.float32) / p["ys"]).reshape(1, -1, 1, 1)
    info = np.iinfo(p["yz"].dtype)
    y = np.rint(acc.astype(np.float32) * scale.astype(np.float32)) + int(p["yz"])
    return np.clip(y, info.min, info.max).astype(p["yz"].dtype)
