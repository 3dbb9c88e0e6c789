"""Shape inference that also folds shape arithmetic: Shape of a tensor whose shape is known,
and the integer ops computing a Reshape's (Expand's, Tile's, ...) target from it, evaluated on
onnxruntime and put in as constants, round after round, until inference knows what it can.
onnx's own data propagation stops at Div and Cast, which TorchScript writes for C // radix.
Only small integer tensors (rank <= 2: TorchScript's F.pad computes its pads as a [3, 2]
ConstantOfShape/Concat/Reshape/Slice/Transpose chain from constants alone) derived from shapes
or constants are folded: no value of the data is ever read, so what is found holds for every
input of those shapes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from .graph import infer_shapes
from .ort_setup import session_options

ARITHMETIC = {"Constant", "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice",
              "Cast", "Add", "Sub", "Mul", "Div", "Mod", "Floor", "Ceil", "Neg", "Abs",
              "Identity", "Reshape", "Min", "Max", "Equal", "Where", "ReduceProd", "Range",
              "ConstantOfShape", "Transpose"}
INTEGERS = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL}
# and floats on the way: HF MobileViT's patch grid is Cast(Shape) -> Div -> Ceil -> Cast (only
# what Shape or constants compute is folded, so a float here is shape arithmetic, never data)
SCALARS = INTEGERS | {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE}
MAX_ROUNDS = 64         # each round resolves one more level (a block's Shape after the last)
MAX_ELEMENTS = 64       # a shape, not data


def folded_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (a scratch copy: it is changed) shape-inferred, its shape arithmetic folded."""
    inferred = infer_shapes(model)
    for _ in range(MAX_ROUNDS):
        folded = _fold_round(model, inferred)
        if not folded:
            break
        del model.graph.value_info[:]
        inferred = infer_shapes(model)
    return inferred


def _types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    graph = model.graph
    return {v.name: v.type for v in list(graph.input) + list(graph.value_info) +
            list(graph.output)}


def _static_dims(tensor_type) -> list[int] | None:
    if tensor_type is None or not tensor_type.HasField("tensor_type") or \
            not tensor_type.tensor_type.HasField("shape"):
        return None
    dims = tensor_type.tensor_type.shape.dim
    return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None


def _small_scalars(tensor_type) -> bool:
    if tensor_type is None or not tensor_type.HasField("tensor_type") or \
            tensor_type.tensor_type.elem_type not in SCALARS:
        return False
    dims = tensor_type.tensor_type.shape.dim if tensor_type.tensor_type.HasField("shape") \
        else None
    known = [d.dim_value for d in dims or () if d.HasField("dim_value")]
    return dims is not None and len(dims) <= 2 and int(np.prod(known)) <= MAX_ELEMENTS


def _fold_round(model: onnx.ModelProto, inferred: onnx.ModelProto) -> int:
    """Put in as constants the shape-derived integers that nodes other than shape arithmetic
    read; how many were put in."""
    types = _types(inferred)
    small = {t.name for t in model.graph.initializer
             if t.data_type in SCALARS and np.prod(t.dims) <= MAX_ELEMENTS}
    known, derived, nodes = set(small), set(), []
    for node in model.graph.node:            # topological, as onnx requires
        if node.op_type not in ARITHMETIC or node.domain not in ("", "ai.onnx") or \
                not all(_small_scalars(types.get(o)) for o in node.output):
            continue
        ins = [i for i in node.input if i]
        if node.op_type in ("Shape", "Size"):
            dims = _static_dims(types.get(ins[0])) if ins else None
            if dims is None:
                continue
            derived.update(node.output)
        elif not all(i in known for i in ins):
            continue
        elif node.op_type != "Constant":    # computed: from a Shape, or from constants only
            derived.update(node.output)
        known.update(node.output)
        nodes.append(node)
    folding = {id(node) for node in nodes}
    readers = {i for node in model.graph.node if id(node) not in folding for i in node.input}
    readers |= {o.name for o in model.graph.output}
    frontier = sorted(n for n in derived if n in readers)
    if not frontier:
        return 0
    values = _evaluate(model, nodes, types, frontier)
    if values is None:
        return 0
    folded = set(frontier)
    for node in model.graph.node:
        if folded.intersection(node.output):
            node.output[:] = [f"{o}__folded" if o in folded else o for o in node.output]
    for name, value in zip(frontier, values):
        model.graph.node.insert(0, onnx.helper.make_node(
            "Constant", [], [name], value=onnx.numpy_helper.from_array(value, name)))
    return len(frontier)


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto], types: dict,
              outputs: list[str]) -> list[np.ndarray] | None:
    """The shape arithmetic run alone on onnxruntime, each Shape as the constant it is."""
    graph = onnx.GraphProto(name="shapes")
    for node in nodes:
        if node.op_type in ("Shape", "Size"):
            dims = _static_dims(types[node.input[0]])
            start, end = (next((a.i for a in node.attribute if a.name == key), default)
                          for key, default in (("start", 0), ("end", len(dims))))
            value = np.asarray(dims[start:end] if node.op_type == "Shape" else
                               int(np.prod(dims)), dtype=np.int64)
            graph.node.append(onnx.helper.make_node(
                "Constant", [], [node.output[0]],
                value=onnx.numpy_helper.from_array(value, node.output[0])))
        else:
            graph.node.append(node)
    used = {i for node in nodes for i in node.input}
    graph.initializer.extend(t for t in model.graph.initializer if t.name in used)
    graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs)
    small = onnx.helper.make_model(graph, opset_imports=[
        o for o in model.opset_import if o.domain in ("", "ai.onnx")])
    small.ir_version = model.ir_version
    try:
        session = ort.InferenceSession(small.SerializeToString(), session_options(),
                                       providers=["CPUExecutionProvider"])
        return session.run(None, {})
    except Exception:          # noqa: BLE001 - onnxruntime refuses: the shapes stay unknown
        return None
