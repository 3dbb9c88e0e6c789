"""One-conv probes: the models that find out what Vela puts on the Ethos-U NPU.

Each probe is one op (a conv, a transposed conv, or a 5-D shuffle) behind a Relu, so the op under
test reads an intermediate tensor as it would inside a network. ``scripts/probe_vela.py`` runs
them all through the judge (onnx2tf, then Vela's two cores on each Ethos-U config) and writes the
README's table; tests/vendors/test_probes.py checks every preset rule against the same runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..naming import Names


@dataclass(frozen=True)
class Probe:
    """One model and the question it asks (``rule``: the preset key it tests, ``what``: words)."""

    name: str
    rule: str
    what: str
    op: str = "Conv"                      # Conv | ConvTranspose | Shuffle5D
    cin: int = 16
    cout: int = 16
    kernel: tuple[int, ...] = (3, 3)    # its length is the conv's spatial rank
    stride: tuple[int, ...] = (1, 1)
    dilation: tuple[int, ...] = (1, 1)
    pads: tuple[int, ...] | None = None        # ONNX order; None: "same" for odd kernels
    output_padding: tuple[int, ...] = (0, 0)
    groups: int = 1
    batch: int = 1
    spatial: tuple[int, ...] = (20, 24)
    weights: str = "uniform"             # uniform | equal (every |w| the same: sum = 127 * n)
    seed: int = 0
    # Vela runs it on the NPU, but the preset calls it illegal because our rewrite is faster by
    # Vela's own estimate (tests/vendors check that it is).
    slower_native: bool = False

    def model(self) -> onnx.ModelProto:
        return probe_model(self)


def _per_axis(values: tuple[int, ...], rank: int) -> tuple[int, ...]:
    return tuple(values) if len(values) == rank else (values[0],) * rank


def _pads(p: Probe) -> tuple[int, ...]:
    if p.pads is not None:
        return p.pads
    rank = len(p.kernel)
    half = tuple((k - 1) // 2 * d for k, d in zip(p.kernel, _per_axis(p.dilation, rank)))
    return (*half, *half)


def probe_model(p: Probe) -> onnx.ModelProto:
    rng = np.random.default_rng(p.seed)
    names = Names()
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [p.batch, p.cin, *p.spatial])
    nodes = [helper.make_node("Relu", ["x"], ["x_relu"], name="relu")]
    inits = []
    if p.op in ("DepthToSpace", "SpaceToDepth"):
        nodes.append(helper.make_node(p.op, ["x_relu"], ["y"], name="move",
                                      blocksize=p.groups, **({"mode": "DCR"} if
                                                             p.op == "DepthToSpace" else {})))
    elif p.op == "StridedSlice":
        consts = {"starts": [0, 0], "ends": list(p.spatial), "axes": [2, 3],
                  "steps": list(p.stride)}
        inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()]
        nodes.append(helper.make_node("Slice", ["x_relu", "starts", "ends", "axes", "steps"],
                                      ["y"], name="slice"))
    elif p.op == "Upsample6D":          # zero insertion as a 6-D Unsqueeze + Pad + Reshape
        s = p.stride[0]
        h, w = p.spatial
        inits += [numpy_helper.from_array(np.array([3, 5], np.int64), "axes"),
                  numpy_helper.from_array(np.array([0] * 6 + [0, 0, 0, s - 1, 0, s - 1],
                                                   np.int64), "pads"),
                  numpy_helper.from_array(np.array([0, 0, h * s, w * s], np.int64), "shape")]
        nodes += [helper.make_node("Unsqueeze", ["x_relu", "axes"], ["u"], name="unsqueeze"),
                  helper.make_node("Pad", ["u", "pads"], ["padded"], name="pad"),
                  helper.make_node("Reshape", ["padded", "shape"], ["y"], name="reshape")]
    elif p.op == "Shuffle5D":
        groups = p.groups
        h, w = p.spatial
        five = numpy_helper.from_array(np.array([p.batch, groups, p.cin // groups, h, w],
                                                np.int64), "shape5")
        four = numpy_helper.from_array(np.array([p.batch, p.cin, h, w], np.int64), "shape4")
        inits += [five, four]
        nodes += [helper.make_node("Reshape", ["x_relu", "shape5"], ["r5"], name="reshape5"),
                  helper.make_node("Transpose", ["r5"], ["t5"], name="transpose",
                                   perm=[0, 2, 1, 3, 4]),
                  helper.make_node("Reshape", ["t5", "shape4"], ["y"], name="reshape4")]
    else:
        if p.op == "ConvTranspose":
            shape = (p.cin, p.cout // p.groups, *p.kernel)
        else:
            shape = (p.cout, p.cin // p.groups, *p.kernel)
        if p.weights == "equal":         # every quantized |w| is 127: the sum is 127 * taps
            signs = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
            w = (0.01 * signs).astype(np.float32)
        else:
            w = (rng.uniform(-1, 1, shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        inits += [numpy_helper.from_array(w, "W"),
                  numpy_helper.from_array(rng.uniform(-0.1, 0.1, p.cout).astype(np.float32), "B")]
        rank = len(p.kernel)
        attrs = dict(kernel_shape=list(p.kernel), strides=list(_per_axis(p.stride, rank)),
                     pads=list(_pads(p)), dilations=list(_per_axis(p.dilation, rank)),
                     group=p.groups)
        if p.op == "ConvTranspose" and any(p.output_padding):
            attrs["output_padding"] = list(_per_axis(p.output_padding, rank))
        nodes.append(helper.make_node(p.op, ["x_relu", "W", "B"], ["y"],
                                      name=names.fresh("conv"), **attrs))
    graph = helper.make_graph(nodes, p.name.replace(" ", "_"), [x],
                              [onnx.ValueInfoProto(name="y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="convrewrite.vendors.probes")
    model.ir_version = 8
    typed = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(next(v for v in typed.graph.value_info if v.name == "y"))
    onnx.checker.check_model(model)
    return model


def _probe(name, rule, what, **kw) -> Probe:
    return Probe(name, rule, what, **kw)


# Each limit probed on both sides where it has two; ``what`` is the table's words.
PROBES: tuple[Probe, ...] = (
    _probe("conv 3x3", "baseline", "3x3 conv, 16 -> 16 channels"),
    _probe("in 4096", "max_in_channels", "1x1 conv, 4096 input channels", cin=4096,
           kernel=(1, 1), spatial=(8, 8)),
    _probe("in 65535", "max_in_channels", "1x1 conv, 65535 input channels", cin=65535, cout=8,
           kernel=(1, 1), spatial=(1, 1)),
    _probe("in 65537", "max_in_channels", "1x1 conv, 65537 input channels", cin=65537, cout=8,
           kernel=(1, 1), spatial=(1, 1)),
    _probe("out 65537", "max_out_channels", "1x1 conv, 65537 output channels", cin=8,
           cout=65537, kernel=(1, 1), spatial=(1, 1)),
    _probe("weight sum 65536", "max_weight_sum", "weights of equal magnitude, "
           "4096 x 4x4 taps per output "
           "(sum 127 * 65536)", cin=4096, cout=8, kernel=(4, 4), pads=(0, 0, 0, 0),
           spatial=(6, 6), weights="equal"),
    _probe("weight sum 65552", "max_weight_sum", "weights of equal magnitude, "
           "4097 x 4x4 taps per output "
           "(sum 127 * 65552)", cin=4097, cout=8, kernel=(4, 4), pads=(0, 0, 0, 0),
           spatial=(6, 6), weights="equal"),
    _probe("conv 1-D", "spatial_ranks", "1-D conv, kernel 3", kernel=(3,), stride=(1,),
           dilation=(1,), spatial=(64,)),
    _probe("conv 3-D", "spatial_ranks", "3-D conv, kernel 3x3x3", kernel=(3, 3, 3),
           stride=(1, 1, 1), dilation=(1, 1, 1), cin=8, cout=8, spatial=(6, 10, 12)),
    _probe("stride 3 pad 1", "max_stride", "3x3 conv, stride 3, pads 1", stride=(3, 3),
           spatial=(30, 30)),
    _probe("stride 4 pad 1", "max_stride", "3x3 conv, stride 4, pads 1 (explicit PAD)",
           stride=(4, 4), spatial=(32, 32)),
    _probe("stride 4 same", "max_stride", "5x5 conv, stride 4, pads 0,0,1,1 (TFLite SAME)",
           kernel=(5, 5), stride=(4, 4), pads=(0, 0, 1, 1), spatial=(32, 32)),
    _probe("stride 4 valid", "max_stride", "3x3 conv, stride 4, no padding", stride=(4, 4),
           pads=(0, 0, 0, 0), spatial=(32, 32), slower_native=True),
    _probe("stride 8 valid", "max_stride", "8x8 conv, stride 8, no padding", kernel=(8, 8),
           stride=(8, 8), pads=(0, 0, 0, 0), spatial=(32, 32), slower_native=True),
    _probe("stride 8 pad 2", "max_stride", "5x5 conv, stride 8, pads 2", kernel=(5, 5),
           stride=(8, 8), spatial=(32, 32)),
    _probe("dilation 4", "max_dilation", "3x3 conv, dilation 4", dilation=(4, 4),
           spatial=(24, 24)),
    _probe("dilated height 64", "max_dilated_kernel_height", "64x1 kernel", kernel=(64, 1),
           cin=1, cout=8, pads=(0, 0, 0, 0), spatial=(70, 8)),
    _probe("dilated height 67", "max_dilated_kernel_height", "3x3 conv, dilation 33 x 1 "
           "(height 67)", dilation=(33, 1), spatial=(80, 24)),
    _probe("kernel 64x65", "max_dilated_kernel_area", "64x65 kernel (area 4160)",
           kernel=(64, 65), cin=1, cout=8, pads=(0, 0, 0, 0), spatial=(70, 70)),
    _probe("pads 2 on 3x3", "max_pad", "3x3 conv, pads 2", pads=(2, 2, 2, 2)),
    _probe("grouped", "groups", "3x3 conv, 4 groups", groups=4),
    _probe("depthwise", "groups", "3x3 depthwise conv", groups=16),
    _probe("multiplier 2 on 1", "depth_multiplier_needs_single_input",
           "depthwise multiplier 2, 1 input channel", cin=1, cout=2),
    _probe("multiplier 2 on 16", "depth_multiplier_needs_single_input",
           "depthwise multiplier 2, 16 input channels", groups=16, cout=32),
    _probe("batch 2", "max_batch", "3x3 conv, batch 2", batch=2),
    _probe("width 65535", "max_dim", "1x3 conv over a 1 x 65535 map", kernel=(1, 3), cin=4,
           cout=4, spatial=(1, 65535)),
    _probe("width 70000", "max_dim", "1x3 conv over a 1 x 70000 map", kernel=(1, 3), cin=4,
           cout=4, spatial=(1, 70000)),
    _probe("transposed s2 k4 p1", "transposed_strides", "ConvTranspose 4x4, stride 2, pads 1",
           op="ConvTranspose", kernel=(4, 4), stride=(2, 2), pads=(1, 1, 1, 1),
           spatial=(16, 16)),
    # Not 16 x 16 with 16 channels: where a Conv's input has C = H = W, onnx2tf cannot tell its
    # layouts apart and its accuracy correction puts a TRANSPOSE (perm 0 2 3 1) before the
    # rewrite's phase convs, which Vela 3's core runs on the CPU (measured on 16 x 16).
    _probe("transposed s3", "transposed_strides", "ConvTranspose 3x3, stride 3",
           op="ConvTranspose", kernel=(3, 3), stride=(3, 3), pads=(0, 0, 0, 0),
           spatial=(16, 20)),
    _probe("transposed s4", "transposed_strides", "ConvTranspose 4x4, stride 4",
           op="ConvTranspose", kernel=(4, 4), stride=(4, 4), pads=(0, 0, 0, 0),
           spatial=(16, 20)),
    _probe("transposed s8", "transposed_strides", "ConvTranspose 8x8, stride 8",
           op="ConvTranspose", kernel=(8, 8), stride=(8, 8), pads=(0, 0, 0, 0), spatial=(8, 8)),
    _probe("transposed k3 s2 op1", "transposed_valid_shape", "ConvTranspose 3x3, stride 2, "
           "output_padding 1 (16 -> 34 uncropped)", op="ConvTranspose", kernel=(3, 3),
           stride=(2, 2), pads=(0, 0, 0, 0), output_padding=(1, 1), spatial=(16, 16)),
    _probe("transposed k3 s2 p1 op1", "transposed_valid_shape", "ConvTranspose 3x3, stride 2, "
           "pads 1, output_padding 1 (16 -> 32)", op="ConvTranspose", kernel=(3, 3),
           stride=(2, 2), pads=(1, 1, 1, 1), output_padding=(1, 1), spatial=(16, 16)),
    _probe("transposed k3 s2 p1", "transposed_valid_shape", "ConvTranspose 3x3, stride 2, "
           "pads 1 (16 -> 31)", op="ConvTranspose", kernel=(3, 3), stride=(2, 2),
           pads=(1, 1, 1, 1), spatial=(16, 16)),
    _probe("transposed k1 s2 op1", "transposed_valid_shape", "ConvTranspose 1x1, stride 2, "
           "output_padding 1", op="ConvTranspose", kernel=(1, 1), stride=(2, 2),
           pads=(0, 0, 0, 0), output_padding=(1, 1), spatial=(16, 16)),
    _probe("shuffle 5-D", "max_tensor_rank", "channel shuffle through a 5-D Reshape/Transpose",
           op="Shuffle5D", groups=2, slower_native=True),
)


def by_name(name: str) -> Probe:
    return next(p for p in PROBES if p.name == name)
