"""Sparse-conv models: a submanifold 3-D block in the style of a SparseUNet / SECOND encoder level,
a SECOND/CenterPoint-style middle encoder and a small sparse U-Net with inverse convs (our
SparseConv / SparseInverseConv ops), and a 2-D masked conv net written with dense Convs and a mask,
as masked-image-modelling code (SparK) exports it.

They are not in ``BUILDERS``: the first needs coordinates that are distinct sites of its grid as
inputs (``sparse.inputs.sparse_feeds`` draws them) and the second is meant for
``--sparse-input mask``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ops import DOMAIN, DOMAIN_VERSION
from ..ops.sparse_conv import INVERSE_OP_TYPE, OP_TYPE, SparseConvAttrs
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


def _sparse_inverse_conv(g: GraphBuilder, x: _Sparse, onto: _Sparse, out_channels: int,
                         kernel: int, stride: int, pad: int, name: str,
                         gain: float = RELU_GAIN) -> _Sparse:
    """The inverse of a strided conv (kernel, stride, pad) from ``onto``'s grid to ``x``'s: back
    onto ``onto``'s sites."""
    rank = len(onto.grid)
    attrs = SparseConvAttrs.create([kernel] * rank, onto.grid, [stride] * rank, [pad] * (2 * rank))
    w = g.weight(f"{name}.weight", (out_channels, x.channels, *[kernel] * rank),
                 x.channels * kernel ** rank, gain)
    b = g.bias(f"{name}.bias", out_channels)
    out = f"{name}.features"
    g.nodes.append(helper.make_node(INVERSE_OP_TYPE, [x.features, x.coords, onto.coords, w, b],
                                    [out], name=name, domain=DOMAIN,
                                    **attrs.to_node_attrs(INVERSE_OP_TYPE)))
    g.domains.add(DOMAIN)
    return _Sparse(out, onto.coords, out_channels, onto.grid)


def _batch_norm(g: GraphBuilder, x: _Sparse, name: str) -> _Sparse:
    """Inference BatchNorm on the features [N, C] (seeded statistics, as a trained net has)."""
    c = x.channels
    params = [g.const(f"{name}.{what}", value.astype(g.dtype)) for what, value in (
        ("scale", g.rng.uniform(0.5, 1.5, c)), ("bias", g.rng.uniform(-0.1, 0.1, c)),
        ("mean", g.rng.uniform(-0.1, 0.1, c)), ("var", g.rng.uniform(0.5, 1.5, c)))]
    return _Sparse(g.node("BatchNormalization", [x.features, *params], name, epsilon=1e-3),
                   x.coords, c, x.grid)


def _conv_bn_relu(g: GraphBuilder, x: _Sparse, out_channels: int, name: str,
                  submanifold: bool, kernel: int = 3, stride: int = 1, pad: int = 0) -> _Sparse:
    y = _sparse_conv(g, x, out_channels, kernel, name, submanifold, stride, pad)
    return _relu(g, _batch_norm(g, y, f"{name}/bn"), f"{name}/relu")


def _sparse_model(g: GraphBuilder, inputs: list, outputs: list[tuple[str, str, int, int]]
                  ) -> onnx.ModelProto:
    """Close the graph: ``outputs`` are (name, source tensor, elem type, columns)."""
    g.inputs.extend(inputs)
    for name, src, elem, cols in outputs:
        g.nodes.append(helper.make_node("Identity", [src], [name], name=f"{name}/identity"))
        g.outputs.append(helper.make_tensor_value_info(name, elem, ["M", cols]))
    graph = helper.make_graph(g.nodes, g.name, g.inputs, g.outputs, g.initializers)
    model = helper.make_model(graph, producer_name="convrewrite.models", opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _sparse_input(g: GraphBuilder, grid, in_channels: int, coords: np.ndarray | None):
    features = helper.make_tensor_value_info("features", g.elem_type, ["N", in_channels])
    if coords is None:
        cinfo = helper.make_tensor_value_info("coordinates", onnx.TensorProto.INT32,
                                              ["N", 1 + len(grid)])
        return [features, cinfo], _Sparse("features", "coordinates", in_channels, tuple(grid))
    c = g.const("coordinates", np.asarray(coords, dtype=np.int32))
    return [features], _Sparse("features", c, in_channels, tuple(grid))


def sparse_middle_encoder_3d(grid=(1600, 1600, 40), in_channels: int = 16,
                             coords: np.ndarray | None = None, seed: int = 0,
                             dtype="float32") -> onnx.ModelProto:
    """A SECOND / CenterPoint-style sparse middle encoder: SubM 16 -> strided 32 -> SubM 32 ->
    strided 64 -> SubM 64 (3x3x3 kernels, stride 2 pad 1), each conv followed by BatchNorm and
    ReLU. Inputs ``features`` [N, in_channels] and ``coordinates`` [N, 4] int32 (batch, then the
    grid's dims), or constant coordinates when ``coords`` is given. Outputs the coarsest level's
    ``out_features`` [M, 64] and ``out_coordinates``."""
    g = GraphBuilder("sparse_middle_encoder_3d", seed, dtype)
    inputs, x = _sparse_input(g, grid, in_channels, coords)
    x = _conv_bn_relu(g, x, 16, "subm1", True)
    x = _conv_bn_relu(g, x, 32, "down2", False, stride=2, pad=1)
    x = _conv_bn_relu(g, x, 32, "subm2", True)
    x = _conv_bn_relu(g, x, 64, "down3", False, stride=2, pad=1)
    x = _conv_bn_relu(g, x, 64, "subm3", True)
    return _sparse_model(g, inputs, [("out_features", x.features, g.elem_type, 64),
                                     ("out_coordinates", x.coords, onnx.TensorProto.INT32, 4)])


def sparse_down_up_3d(grid=(12, 10, 8), in_channels: int = 3, width: int = 8,
                      coords: np.ndarray | None = None, seed: int = 0) -> onnx.ModelProto:
    """Three layers: a SubM 3x3x3 conv, a regular 3x3x3 stride-2 pad-1 conv down, and the inverse
    conv of that one back onto the SubM conv's sites (ReLU between): the smallest net with every
    kind of sparse conv. Outputs ``out_features`` [N, in_channels] on the input sites."""
    g = GraphBuilder("sparse_down_up_3d", seed, "float32")
    inputs, x = _sparse_input(g, grid, in_channels, coords)
    a = _relu(g, _sparse_conv(g, x, width, 3, "subm", True), "subm/relu")
    d = _relu(g, _sparse_conv(g, a, 2 * width, 3, "down", False, stride=2, pad=1), "down/relu")
    u = _sparse_inverse_conv(g, d, a, in_channels, 3, 2, 1, "up", gain=LINEAR_GAIN)
    return _sparse_model(g, inputs, [("out_features", u.features, g.elem_type, in_channels)])


def sparse_unet_3d(grid=(48, 48, 16), in_channels: int = 4, width: int = 16, classes: int = 8,
                   coords: np.ndarray | None = None, seed: int = 0,
                   dtype="float32") -> onnx.ModelProto:
    """A small sparse U-Net (MinkUNet / SparseUNet style), two levels down and back up: per level a
    SubM conv + BN + ReLU, 2x2x2 stride-2 down convs, inverse convs back onto the saved finer
    sites, the skip features concatenated, and a SubM 1x1 head. Outputs per-site
    ``out_features`` [N, classes] on the input sites, in their order, and ``out_coordinates``."""
    g = GraphBuilder("sparse_unet_3d", seed, dtype)
    inputs, x0 = _sparse_input(g, grid, in_channels, coords)
    e0 = _conv_bn_relu(g, x0, width, "enc0", True)
    x1 = _conv_bn_relu(g, e0, 2 * width, "down1", False, kernel=2, stride=2)
    e1 = _conv_bn_relu(g, x1, 2 * width, "enc1", True)
    x2 = _conv_bn_relu(g, e1, 4 * width, "down2", False, kernel=2, stride=2)
    b2 = _conv_bn_relu(g, x2, 4 * width, "bottom", True)
    u1 = _sparse_inverse_conv(g, b2, e1, 2 * width, 2, 2, 0, "up1")
    u1 = _relu(g, _batch_norm(g, u1, "up1/bn"), "up1/relu")
    c1 = _Sparse(g.node("Concat", [u1.features, e1.features], "skip1", axis=1), e1.coords,
                 4 * width, e1.grid)
    d1 = _conv_bn_relu(g, c1, 2 * width, "dec1", True)
    u0 = _sparse_inverse_conv(g, d1, e0, width, 2, 2, 0, "up0")
    u0 = _relu(g, _batch_norm(g, u0, "up0/bn"), "up0/relu")
    c0 = _Sparse(g.node("Concat", [u0.features, e0.features], "skip0", axis=1), e0.coords,
                 2 * width, e0.grid)
    d0 = _conv_bn_relu(g, c0, width, "dec0", True)
    head = _sparse_conv(g, d0, classes, 1, "head", True, gain=LINEAR_GAIN)
    return _sparse_model(g, inputs, [("out_features", head.features, g.elem_type, classes),
                                     ("out_coordinates", head.coords, onnx.TensorProto.INT32,
                                      1 + len(grid))])


def sparse_unet_block_3d(grid=(24, 24, 16), in_channels: int = 4, width: int = 16,
                         coords: np.ndarray | None = None, seed: int = 0,
                         dtype="float32") -> onnx.ModelProto:
    """Inputs ``features`` [N, in_channels] and ``coordinates`` [N, 4] int32 (batch, z, y, x) on
    ``grid`` -- or, with ``coords`` given, those coordinates as a constant (the rulebooks are then
    precomputed). A submanifold stem, a submanifold residual block (its Add is row-aligned because
    submanifold convs keep the input's sites in order), a regular 3x3x3 stride-2 down conv, two
    submanifold convs sharing one rulebook, and a regular 2x2x2 stride-2 down conv (spconv's
    SparseConv3d(c, 2c, 2, 2)). Outputs ``features`` and ``coordinates`` of the coarsest level
    (``sparse_unet_3d`` has a decoder too, with inverse convs)."""
    g = GraphBuilder("sparse_unet_block_3d", seed, dtype)
    grid = tuple(grid)
    inputs, x = _sparse_input(g, grid, in_channels, coords)
    x = _relu(g, _sparse_conv(g, x, width, 3, "stem", True), "stem/relu")
    y = _relu(g, _sparse_conv(g, x, width, 3, "block1/conv1", True), "block1/relu1")
    y = _sparse_conv(g, y, width, 3, "block1/conv2", True, gain=LINEAR_GAIN)
    x = _Sparse(g.node("Add", [y.features, x.features], "block1/add"), y.coords, width, grid)
    x = _relu(g, x, "block1/relu2")
    x = _relu(g, _sparse_conv(g, x, 2 * width, 3, "down1", False, stride=2, pad=1), "down1/relu")
    x = _relu(g, _sparse_conv(g, x, 2 * width, 3, "block2/conv1", True), "block2/relu1")
    x = _relu(g, _sparse_conv(g, x, 2 * width, 3, "block2/conv2", True), "block2/relu2")
    x = _sparse_conv(g, x, 4 * width, 2, "down2", False, stride=2, gain=LINEAR_GAIN)
    return _sparse_model(g, inputs, [("out_features", x.features, g.elem_type, 4 * width),
                                 ("out_coordinates", x.coords, onnx.TensorProto.INT32, 4)])


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


def sparse_inverse_conv_model(attrs: SparseConvAttrs, weight: np.ndarray,
                              bias: np.ndarray | None = None, coords: np.ndarray | None = None,
                              out_coords: np.ndarray | None = None, coord_dtype=np.int32,
                              opset: int = 17) -> onnx.ModelProto:
    """One SparseInverseConv: features [M, Cin], coordinates [M, 1 + D] (coarse) and
    out_coordinates [N, 1 + D] (fine) -- either coordinate set constant when given ->
    out_features [N, Cout]."""
    elem = helper.np_dtype_to_tensor_dtype(weight.dtype)
    cdt = helper.np_dtype_to_tensor_dtype(np.dtype(coord_dtype))
    rank = attrs.rank
    inputs = [helper.make_tensor_value_info("features", elem, ["M", weight.shape[1]])]
    inits = [numpy_helper.from_array(weight, "W")]
    for name, value, rows in (("coordinates", coords, "M"), ("out_coordinates", out_coords, "N")):
        if value is None:
            inputs.append(helper.make_tensor_value_info(name, cdt, [rows, 1 + rank]))
        else:
            inits.append(numpy_helper.from_array(np.asarray(value, coord_dtype), name))
    names = ["features", "coordinates", "out_coordinates", "W"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "B"))
        names.append("B")
    node = helper.make_node(INVERSE_OP_TYPE, names, ["out_features"], name="sinv",
                            domain=DOMAIN, **attrs.to_node_attrs(INVERSE_OP_TYPE))
    graph = helper.make_graph([node], "one_sparse_inverse_conv", inputs, [
        helper.make_tensor_value_info("out_features", elem, ["N", weight.shape[0]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    return model
