"""One-conv probes: the models that find out what Vela puts on the Ethos-U NPU.

Each probe is one op (a conv, a transposed conv, or a 5-D shuffle) behind a Relu, so the op under
test reads an intermediate tensor as it would inside a network. ``scripts/probe_vela.py`` runs
them all through the judge (onnx2tf, then Vela's two cores on each Ethos-U config) and writes the
README's table; tests/vendors/test_probes.py checks every preset rule against the same runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] | None = None     # ONNX order; None: "same" for odd kernels
    output_padding: tuple[int, int] = (0, 0)
    groups: int = 1
    batch: int = 1
    spatial: tuple[int, int] = (20, 24)
    weights: str = "uniform"             # uniform | equal (every |w| the same: sum = 127 * n)
    seed: int = 0
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    def model(self) -> onnx.ModelProto:
        return probe_model(self)


def _pads(p: Probe) -> tuple[int, ...]:
    if p.pads is not None:
        return p.pads
    half = tuple((k - 1) // 2 * d for k, d in zip(p.kernel, p.dilation))
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
        attrs = dict(kernel_shape=list(p.kernel), strides=list(p.stride), pads=list(_pads(p)),
                     dilations=list(p.dilation), group=p.groups)
        if p.op == "ConvTranspose" and any(p.output_padding):
            attrs["output_padding"] = list(p.output_padding)
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
