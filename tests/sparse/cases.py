"""One-SparseConv models and seeded random sparse inputs for the sparse tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convrewrite.ops import DOMAIN
from convrewrite.sparse import SparseConvAttrs

# every op allowed (the shipped presets list NPU ops, which have no gather or scatter)
HOST = {"name": "host", "conv": {"max_in_channels": 4096}}


def sparse_model(attrs: SparseConvAttrs, weight: np.ndarray, bias: np.ndarray | None = None,
                 coords: np.ndarray | None = None, coord_dtype=np.int32,
                 attributes: dict | None = None, opset: int = 17) -> onnx.ModelProto:
    """features [N, Cin] (and coordinates [N, 1 + D] unless ``coords`` makes them constant) ->
    out_features, out_coordinates."""
    elem = helper.np_dtype_to_tensor_dtype(weight.dtype)
    cdt = helper.np_dtype_to_tensor_dtype(np.dtype(coord_dtype))
    rank = attrs.rank
    inputs = [helper.make_tensor_value_info("features", elem, ["N", weight.shape[1]])]
    inits = [numpy_helper.from_array(weight, "W")]
    if coords is None:
        inputs.append(helper.make_tensor_value_info("coordinates", cdt, ["N", 1 + rank]))
    else:
        inits.append(numpy_helper.from_array(np.asarray(coords, coord_dtype), "coordinates"))
    names = ["features", "coordinates", "W"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "B"))
        names.append("B")
    node = helper.make_node("SparseConv", names, ["out_features", "out_coordinates"],
                            name="sconv", domain=DOMAIN,
                            **(attributes if attributes is not None else attrs.to_node_attrs()))
    graph = helper.make_graph([node], "one_sparse_conv", inputs, [
        helper.make_tensor_value_info("out_features", elem, ["M", weight.shape[0]]),
        helper.make_tensor_value_info("out_coordinates", cdt, ["M", 1 + rank])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    return model


def random_sparse(seed: int, batches: int, grid, count: int, channels: int, dtype=np.int32):
    rng = np.random.default_rng(seed)
    flat = rng.choice(batches * int(np.prod(grid)), count, replace=False)
    coords = np.stack(np.unravel_index(flat, (batches, *grid)), 1).astype(dtype)
    return rng, coords, rng.uniform(-1, 1, (count, channels)).astype(np.float32)
