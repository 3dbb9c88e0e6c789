"""Sparse-conv models: a submanifold 3-D block in the style of a SparseUNet / SECOND encoder level
(our SparseConv op), and a 2-D masked conv net written with dense Convs and a mask, as
masked-image-modelling code (SparK) exports it.

They are not in ``BUILDERS``: the first needs coordinates that are distinct sites of its grid as
inputs (``sparse.inputs.sparse_feeds`` draws them) and the second is meant for
``--sparse-input mask``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ops import DOMAIN, DOMAIN_VERSION
from ..ops.sparse_conv import OP_TYPE, SparseConvAttrs
from .builder import LINEAR_GAIN, RELU_GAIN, GraphBuilder, T


class _Sparse:
    """A sparse tensor of the graph being built: features name, coordinates name, channels, grid."""

    def __init__(self, features: str, coords: str, channels: int, grid: tuple[int, ...]):
        self.features, self.coords, self.channels, self.grid = features, coords, channels, grid


def _sparse_conv(g: GraphBuilder, x: _Sparse, out_channels: int, kernel: int, name: str,
                 submanifold: bool, stride: int = 1, pad: int = 0, gain: float = RELU_GAIN) -> _Sparse:
    rank = len(x.grid)
    attrs = SparseConvAttrs.create([kernel] * rank, x.grid, [stride] * rank,
                                   None if submanifold else [pad] * (2 * rank), None, submanifold)
    w = g.weight(f"{name}.weight", (out_channels, x.channels, *[kernel] * rank),
                 x.channels * kernel ** rank, gain)
    b = g.bias(f"{name}.bias", out_channels)
    outs = [f"{name}.features", f"{name}.coords"]
    g.nodes.append(helper.make_node(OP_TYPE, [x.features, x.coords, w, b], outs, name=name,
                                    domain=DOMAIN, **attrs.to_node_attrs()))
    g.domains.add(DOMAIN)
    return _Sparse(outs[0], outs[1], out_channels, attrs.out_spatial_shape)


def _relu(g: GraphBuilder, x: _Sparse, name: str) -> _Sparse:
    return _Sparse(g.node("Relu", [x.features], name), x.coords, x.channels, x.grid)


def sparse_unet_block_3d(grid=(24, 24, 16), in_channels: int = 4, width: int = 16,
                         coords: np.ndarray | None = None, seed: int = 0,
                         dtype="float32") -> onnx.ModelProto:
    """Inputs ``features`` [N, in_channels] and ``coordinates`` [N, 4] int32 (batch, z, y, x) on
    ``grid`` -- or, with ``coords`` given, those coordinates as a constant (the rulebooks are then
    precomputed). A submanifold stem, a submanifold residual block (its Add is row-aligned because
    submanifold convs keep the input's sites in order), a regular 3x3x3 stride-2 down conv, two
    submanifold convs sharing one rulebook, and a regular 2x2x2 stride-2 down conv (spconv's
    SparseConv3d(c, 2c, 2, 2)). Outputs ``features`` and ``coordinates`` of the coarsest level.
    The decoder half of a U-Net needs inverse (transposed) sparse convs, which are not built."""
    g = GraphBuilder("sparse_unet_block_3d", seed, dtype)
    grid = tuple(grid)
    g.inputs.append(helper.make_tensor_value_info("features", g.elem_type, ["N", in_channels]))
    if coords is None:
        g.inputs.append(helper.make_tensor_value_info("coordinates", onnx.TensorProto.INT32,
                                                      ["N", 4]))
        c = "coordinates"
    else:
        c = g.const("coordinates", np.asarray(coords, dtype=np.int32))
    x = _Sparse("features", c, in_channels, grid)
    x = _relu(g, _sparse_conv(g, x, width, 3, "stem", True), "stem/relu")
    y = _relu(g, _sparse_conv(g, x, width, 3, "block1/conv1", True), "block1/relu1")
    y = _sparse_conv(g, y, width, 3, "block1/conv2", True, gain=LINEAR_GAIN)
    x = _Sparse(g.node("Add", [y.features, x.features], "block1/add"), y.coords, width, grid)
    x = _relu(g, x, "block1/relu2")
    x = _relu(g, _sparse_conv(g, x, 2 * width, 3, "down1", False, stride=2, pad=1), "down1/relu")
    x = _relu(g, _sparse_conv(g, x, 2 * width, 3, "block2/conv1", True), "block2/relu1")
    x = _relu(g, _sparse_conv(g, x, 2 * width, 3, "block2/conv2", True), "block2/relu2")
    x = _sparse_conv(g, x, 4 * width, 2, "down2", False, stride=2, gain=LINEAR_GAIN)
    for name, src, elem, cols in (("out_features", x.features, g.elem_type, 4 * width),
                                  ("out_coordinates", x.coords, onnx.TensorProto.INT32, 4)):
        g.nodes.append(helper.make_node("Identity", [src], [name], name=f"{name}/identity"))
        g.outputs.append(helper.make_tensor_value_info(name, elem, ["M", cols]))
    graph = helper.make_graph(g.nodes, g.name, g.inputs, g.outputs, g.initializers)
    model = helper.make_model(graph, producer_name="convrewrite.models", opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def masked_conv_net(image_size: int = 32, in_channels: int = 8, width: int = 16, seed: int = 0,
                    dtype="float32") -> onnx.ModelProto:
    """Inputs ``image`` [1, in_channels, s, s] and ``mask`` [1, 1, s, s] (1 where visible). Every
    conv reads ``x * mask``; the first two are followed by ``* mask`` again (masked-image models
    keep features only on visible patches: submanifold convs), the second with a residual Add;
    the third is a stride-2 conv whose output is dense (regular), then a 1x1 head."""
    g = GraphBuilder("masked_conv_net", seed, dtype)
    x = g.input("image", in_channels, (image_size, image_size), 1)
    mask = g.input("mask", 1, (image_size, image_size), 1)

    def masked(t: T, name: str) -> T:
        return T(g.node("Mul", [t.name, mask.name], name), t.channels, t.spatial)

    h = g.relu(masked(g.conv(masked(x, "in/mask"), width, 3, name="conv1"), "conv1/mask"),
               "conv1/relu")
    y = masked(g.conv(masked(h, "conv2/in_mask"), width, 3, name="conv2", gain=LINEAR_GAIN),
               "conv2/mask")
    h = g.relu(g.add(y, h, "conv2/add"), "conv2/relu")
    h = g.relu(g.conv(masked(h, "down/in_mask"), 2 * width, 3, 2, name="down"), "down/relu")
    g.output(g.conv(h, 4, 1, name="head", gain=LINEAR_GAIN), "out")
    return g.build()


def sparse_conv_model(attrs: SparseConvAttrs, weight: np.ndarray, bias: np.ndarray | None = None,
                 coords: np.ndarray | None = None, coord_dtype=np.int32,
                 attributes: dict | None = None, opset: int = 17) -> onnx.ModelProto:
    """One SparseConv: features [N, Cin] (and coordinates [N, 1 + D] unless ``coords`` makes them
    constant) -> out_features, out_coordinates; ``attributes`` overrides the node's attributes
    (to build bad ones)."""
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


def random_mask(image_size: int, density: float, seed: int = 0, dtype="float32") -> np.ndarray:
    """[1, 1, s, s] of 0/1 with about ``density`` ones."""
    rng = np.random.default_rng(seed)
    return (rng.random((1, 1, image_size, image_size)) < density).astype(dtype)
