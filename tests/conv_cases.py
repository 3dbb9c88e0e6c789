"""Single-conv ONNX models for unit and property tests, in every form the passes must accept."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

WEIGHT_FORMS = ("initializer", "constant", "qdq_tensor", "qdq_channel")


def conv_model(*, op: str = "Conv", cin: int = 8, cout: int = 8, kernel=(3, 3), groups: int = 1,
               strides=None, pads=None, dilations=None, auto_pad: str | None = None,
               output_padding=None, bias: bool = True, dtype=np.float32,
               weight_form: str = "initializer", spatial=None, batch=1, opset: int = 17,
               seed: int = 0) -> onnx.ModelProto:
    """One conv between a Relu (so the conv input is an intermediate) and the graph output."""
    rank = len(kernel)
    spatial = spatial or (8,) * rank
    rng = np.random.default_rng(seed)
    fan_in = (cin // groups) * int(np.prod(kernel))
    if op == "ConvTranspose":
        w_shape = (cin, cout // groups, *kernel)
    else:
        w_shape = (cout, cin // groups, *kernel)
    w = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) * 0.1
    inits, nodes = [], [helper.make_node("Relu", ["x"], ["x_relu"], name="pre")]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    if weight_form == "initializer":
        inits.append(numpy_helper.from_array(w.astype(dtype), "W"))
    elif weight_form == "constant":
        nodes.append(helper.make_node("Constant", [], ["W"], name="W_const",
                                      value=numpy_helper.from_array(w.astype(dtype), "W_value")))
    elif weight_form in ("qdq_tensor", "qdq_channel"):
        per_channel = weight_form == "qdq_channel"
        axis = 1 if op == "ConvTranspose" else 0
        reduce_axes = tuple(i for i in range(w.ndim) if i != axis) if per_channel else None
        scale = (np.abs(w).max(axis=reduce_axes) / 127.0).astype(np.float32) + 1e-6
        shape = [1] * w.ndim
        if per_channel:
            shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        zp = np.zeros(scale.shape, dtype=np.int8)
        inits += [numpy_helper.from_array(q, "W_q"), numpy_helper.from_array(scale, "W_scale"),
                  numpy_helper.from_array(zp, "W_zp")]
        attrs = {"axis": axis} if per_channel else {}
        nodes.append(helper.make_node("DequantizeLinear", ["W_q", "W_scale", "W_zp"], ["W"],
                                      name="W_dq", **attrs))
    else:
        raise ValueError(weight_form)
    inputs = ["x_relu", "W"]
    if bias:
        inits.append(numpy_helper.from_array(b.astype(dtype), "B"))
        inputs.append("B")
    attrs = {"kernel_shape": list(kernel)}
    if groups != 1:
        attrs["group"] = groups
    for key, value in (("strides", strides), ("pads", pads), ("dilations", dilations),
                       ("output_padding", output_padding)):
        if value is not None:
            attrs[key] = list(value)
    if auto_pad is not None:
        attrs["auto_pad"] = auto_pad
    nodes.append(helper.make_node(op, inputs, ["y"], name="conv", **attrs))
    graph = helper.make_graph(nodes, "single_conv",
                              [helper.make_tensor_value_info("x", elem, [batch, cin, *spatial])],
                              [onnx.ValueInfoProto(name="y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(next(v for v in inferred.graph.value_info if v.name == "y"))
    onnx.checker.check_model(model)
    return model


# Weights computed from constants (ConstantOfShape, arithmetic on initializers), as some exporters
# write them; a 5x5 kernel, so k210 (1x1 and 3x3 only) has to slice them.
COUT, CIN, K = 4, 4, 5


def computed(model: onnx.ModelProto, name: str, nodes: list[onnx.NodeProto],
             inits: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """``model`` with the initializer ``name`` computed by ``nodes`` (from ``inits``) instead."""
    kept = [t for t in model.graph.initializer if t.name != name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + [numpy_helper.from_array(v, k)
                                           for k, v in (inits or {}).items()])
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    onnx.checker.check_model(model)
    return model


def const_of_shape(out: str, shape, value: float) -> list[onnx.NodeProto]:
    return [helper.make_node("Constant", [], [f"{out}_shape"],
                             value=numpy_helper.from_array(np.array(shape, np.int64))),
            helper.make_node("ConstantOfShape", [f"{out}_shape"], [out],
                             value=numpy_helper.from_array(np.array([value], np.float32)))]


def _constant_of_shape_model() -> onnx.ModelProto:
    model = conv_model(cin=CIN, cout=COUT, kernel=(K, K), pads=(2, 2, 2, 2))
    model = computed(model, "W", const_of_shape("W", [COUT, CIN, K, K], 0.25))
    return computed(model, "B", const_of_shape("B", [COUT], -0.5))


def _mul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    model = conv_model(cin=CIN, cout=COUT, kernel=(K, K), pads=(2, 2, 2, 2))
    model = computed(model, "W", [helper.make_node("Mul", ["W0", "S"], ["W"])], {
        "W0": rng.standard_normal((COUT, CIN, K, K)).astype(np.float32),
        "S": rng.uniform(0.5, 2, (COUT, 1, 1, 1)).astype(np.float32)})
    return computed(model, "B", [helper.make_node("Add", ["B0", "B1"], ["B"])], {
        "B0": rng.standard_normal(COUT).astype(np.float32),
        "B1": rng.standard_normal(COUT).astype(np.float32)})


def _qdq_model() -> onnx.ModelProto:
    """A QDQ weight whose quantized integers are computed (Neg of an initializer)."""
    model = conv_model(cin=CIN, cout=COUT, kernel=(K, K), pads=(2, 2, 2, 2),
                       weight_form="qdq_tensor")
    q = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W_q"))
    return computed(model, "W_q", [helper.make_node("Neg", ["W_q0"], ["W_q"])], {"W_q0": -q})


def computed_weight_model(form: str) -> onnx.ModelProto:
    """A 5x5 conv whose weight and bias are computed from constants only: ``constant_of_shape``,
    ``mul`` (Mul / Add of initializers) or ``qdq`` (a DequantizeLinear of computed integers)."""
    return {"constant_of_shape": _constant_of_shape_model, "mul": _mul_model,
            "qdq": _qdq_model}[form]()


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def random_input(model: onnx.ModelProto, batch: int = 1, seed: int = 1) -> dict:
    info = model.graph.input[0].type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(info.elem_type)
    shape = [d.dim_value if d.HasField("dim_value") else batch for d in info.shape.dim]
    x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)
    return {model.graph.input[0].name: x}


def op_count(model: onnx.ModelProto, op: str) -> int:
    return sum(n.op_type == op for n in model.graph.node)


def emitted_within(before: onnx.ModelProto, after: onnx.ModelProto, target) -> list[str]:
    """What the rewrite emitted that the target cannot hold: nodes (not in ``before``) whose op
    the target's ``ops:`` list lacks, and tensors they write whose inferred rank exceeds its
    ``max_tensor_rank``. Empty when every emitted node and tensor is legal."""
    import convrewrite as cr
    target = target if hasattr(target, "allows_op") else cr.load_target(target)
    kept = {n.name for n in before.graph.node}
    inferred = onnx.shape_inference.infer_shapes(after)
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in (*inferred.graph.value_info, *inferred.graph.output)
             if v.type.tensor_type.HasField("shape")}
    wrong = []
    for node in after.graph.node:
        if node.name in kept:
            continue
        if node.op_type != "Constant" and not target.allows_op(node.op_type):
            wrong.append(f"{node.name}: {node.op_type} is not in the target's ops")
        limit = target.max_tensor_rank
        for out in node.output:
            if limit is not None and ranks.get(out, 0) > limit:
                wrong.append(f"{node.name}: {out} is {ranks[out]}-D > {limit}")
    return wrong


def rewrite_legal_and_close(model: onnx.ModelProto, target, *, rtol: float, atol: float,
                            scale_atol: bool = False, full_check: bool = False,
                            strict_rank: bool = True):
    """Rewrite ``model`` for ``target`` and assert what every lowering owes: status ok, nothing
    left illegal, every emitted node and tensor within the target (``strict_rank=False`` where
    the model's own tensors already exceed its rank), and outputs close to the original's on
    onnxruntime (``scale_atol`` scales ``atol`` by the output's magnitude, for summed taps)."""
    import convrewrite as cr
    out, report = cr.rewrite(model, target)
    assert report.status == "ok", report.render()
    if full_check:
        onnx.checker.check_model(out, full_check=True)
    assert not cr.check(out, target).remaining
    if strict_rank:
        assert emitted_within(model, out, target) == []
    feeds = random_input(model)
    ref, got = run(model, feeds)[0], run(out, feeds)[0]
    bound = atol * max(1.0, float(np.abs(ref).max())) if scale_atol else atol
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=bound)
    return out, report
