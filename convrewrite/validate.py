"""Our own validation of a model's semantics, before any pass or onnxruntime sees it.

onnx.checker accepts models that no runtime can run (group 0, strides 0, negative pads, a kernel
larger than its padded input, an opset newer than onnx knows, duplicate node names); left alone they
crash a planner (exit 4) or come back as onnxruntime's multi-line log. Each check here fails with a
one-line BadInputError naming the node and the attribute, and covers every graph of the model
(subgraphs and functions too, through ``walk``).
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from .build.onnx_read import (IO_POSITIONS, _shape, constant_value, dtype_name,
                               quant_params_mismatch)
from .conv import CONV_OPS
from .errors import BadInputError
from .graph import check_model, fits_in_protobuf
from .walk import Scope, proto_graphs, scopes

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
STANDARD_DOMAINS = ("", "ai.onnx")
# Conv and ConvTranspose's type T in every opset (bfloat16 from opset 22): any other, or operands
# of different types, is a model no runtime loads; our lowerings would emit more of the same.
FLOAT_CONV_TYPES = ("float16", "float32", "float64", "bfloat16")
# Conv attributes that are extents: a value past 2**31 - 1 (a pad of 2**63 - 1) is no real model,
# and the planners' arithmetic on it overflows the int64 tensors they emit.
INT_ATTRS = ("strides", "dilations", "pads", "kernel_shape", "output_padding", "output_shape")
MAX_EXTENT = 2**31 - 1


def validate_model(model: onnx.ModelProto) -> None:
    """What the proto itself says: opsets onnx knows, no sparse initializers, not empty."""
    if not model.graph.node and not model.graph.output:
        raise BadInputError("not an ONNX model (no graph)")
    newest = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in STANDARD_DOMAINS and imp.version > newest:
            raise BadInputError(f"the model imports opset {imp.version}; the newest this onnx "
                                f"({onnx.__version__}) knows is {newest}")
    if model.graph.sparse_initializer:
        name = model.graph.sparse_initializer[0].values.name
        raise BadInputError(f"sparse initializer {name!r}: sparse initializers are not supported "
                            "(store the tensor dense)")
    _validate_element_types(model)


KNOWN_ELEMENT_TYPES = frozenset(onnx.TensorProto.DataType.values())


def _validate_element_types(model: onnx.ModelProto) -> None:
    """Every tensor's element type is one onnx knows: onnx.checker lets an unknown one through
    (a weight of type 35) and onnx-graphsurgeon's importer then fails on it with a KeyError."""
    for graph, _ in proto_graphs(model):
        tensors = [(t.name, t.data_type) for t in getattr(graph, "initializer", [])]
        tensors += [(f"{n.op_type} {n.name}'s attribute {a.name}", a.t.data_type)
                    for n in graph.node for a in n.attribute
                    if a.type == onnx.AttributeProto.TENSOR]
        infos = [*getattr(graph, "value_info", [])]
        if isinstance(graph, onnx.GraphProto):
            infos += [*graph.input, *graph.output]
        tensors += [(i.name, i.type.tensor_type.elem_type) for i in infos
                    if i.type.HasField("tensor_type")]
        for name, kind in tensors:
            if kind not in KNOWN_ELEMENT_TYPES:
                raise BadInputError(f"tensor {name!r} has element type {kind}, which onnx "
                                    f"{onnx.__version__} does not know")


def check_in_memory(model: onnx.ModelProto, origin: str) -> None:
    """onnx.checker on a model handed over in memory (the API), as ``graph.load_model`` does for
    files, except for one rule files from exporters always meet and hand-built models often do
    not: a tensor type without a shape (unknown rank) is fine here, as it is to onnxruntime.
    Checked on a copy where one needs that (the caller's model is never changed)."""
    if not fits_in_protobuf(model):     # ByteSize() itself raises past 2 GB
        return
    if not any(_rank_unknown(info) for info in _value_infos(model)):
        check_model(model, origin)      # nothing to change: no copy of every weight
        return
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for info in _value_infos(copy):
        if _rank_unknown(info):
            info.type.tensor_type.shape.SetInParent()
    check_model(copy, origin)


def _value_infos(model: onnx.ModelProto):
    return (*model.graph.input, *model.graph.output, *model.graph.value_info)


def _rank_unknown(info: onnx.ValueInfoProto) -> bool:
    return info.type.HasField("tensor_type") and not info.type.tensor_type.HasField("shape")


def validate_graph(graph: gs.Graph) -> None:
    """Every graph of the model: unique node names per graph, and every conv well formed."""
    for scope in scopes(graph):
        seen: set[str] = set()
        for node in scope.graph.nodes:
            if node.name and node.name in seen:
                raise BadInputError(f"two nodes are named {scope.where(node)!r}; node names must "
                                    "be unique")
            seen.add(node.name)
            if node.op in CONV_OPS and node.domain in (*STANDARD_DOMAINS, None):
                validate_conv(node, scope)


def dims_list(shape) -> list:
    """A shape for a message: unknown extents as '?'."""
    return ["?" if d is None else d for d in shape]


def _ints(node: gs.Node, attr: str, default) -> tuple[int, ...]:
    value = node.attrs.get(attr, default)
    return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def validate_conv(node: gs.Node, scope: Scope = Scope("", None)) -> None:
    """Attributes that contradict each other or the weight, named with the node."""
    where = f"node {scope.where(node)!r} ({node.op})"

    def fail(text: str):
        raise BadInputError(f"{where}: {text}")

    x_pos, w_pos, _ = IO_POSITIONS[node.op]
    if len(node.inputs) <= w_pos or not node.outputs:
        fail("needs a data and a weight input and an output")
    w_shape = _shape(node.inputs[w_pos])
    x_shape = _shape(node.inputs[x_pos])
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in AUTO_PADS:
        fail(f"auto_pad {auto_pad!r}: expected one of {', '.join(AUTO_PADS)}")
    group = node.attrs.get("group", 1)
    if not isinstance(group, int) or group < 1:
        fail(f"group {group}: expected a positive integer")
    _validate_weight_dq(node.inputs[w_pos], fail)
    if node.op in ("Conv", "ConvTranspose"):
        _validate_float_operands(node, fail)
    if w_shape is None or len(w_shape) == 0:
        return                               # unknown weight: passes decline it with a reason
    if len(w_shape) < 3:
        fail(f"weight of shape {list(w_shape)}: expected rank >= 3 (out, in, kernel...)")
    rank = len(w_shape) - 2
    for attr in INT_ATTRS:
        values = _ints(node, attr, ())
        if any(abs(v) > MAX_EXTENT for v in values):
            fail(f"{attr} {list(values)}: values beyond {MAX_EXTENT} are not supported")
    if x_shape is not None and len(x_shape) != rank + 2:
        fail(f"input of rank {len(x_shape)} with a weight of rank {rank + 2}")
    if x_shape is not None and 0 in x_shape[1:]:
        # onnxruntime rejects a conv over no channels or no pixels, and every planner divides
        # by the extents
        fail(f"input of shape {dims_list(x_shape)} is empty on axis {x_shape.index(0, 1)}")
    for attr in ("strides", "dilations"):
        values = _ints(node, attr, (1,) * rank)
        if len(values) != rank:
            fail(f"{attr} {list(values)}: expected {rank} values")
        if any(v < 1 for v in values):
            fail(f"{attr} {list(values)}: every value must be >= 1")
    pads = _ints(node, "pads", (0,) * (2 * rank))
    if len(pads) != 2 * rank:
        fail(f"pads {list(pads)}: expected {2 * rank} values (begins then ends)")
    if any(p < 0 for p in pads):
        fail(f"pads {list(pads)}: negative pads are not valid")
    kernel = w_shape[2:]
    if "kernel_shape" in node.attrs and None not in kernel:
        stated = _ints(node, "kernel_shape", ())
        if stated != tuple(kernel):
            fail(f"kernel_shape {list(stated)} contradicts the weight's kernel {list(kernel)}")
    transposed = node.op == "ConvTranspose"
    in_channels = x_shape[1] if x_shape is not None else None
    if transposed:
        if w_shape[0] is not None and in_channels is not None and w_shape[0] != in_channels:
            fail(f"{in_channels} input channels but the weight takes {w_shape[0]}")
        if w_shape[0] is not None and w_shape[0] % group:
            fail(f"group {group} does not divide the {w_shape[0]} input channels")
        strides = _ints(node, "strides", (1,) * rank)
        dilations = _ints(node, "dilations", (1,) * rank)
        out_pad = _ints(node, "output_padding", (0,) * rank)
        if len(out_pad) != rank or any(p < 0 for p in out_pad) or any(
                p >= max(s, d) for p, s, d in zip(out_pad, strides, dilations)):
            fail(f"output_padding {list(out_pad)}: expected {rank} values, each >= 0 and below "
                 "its stride or dilation")
        if "output_shape" in node.attrs and len(_ints(node, "output_shape", ())) != rank:
            fail(f"output_shape {list(_ints(node, 'output_shape', ()))}: expected {rank} values")
        return
    if w_shape[0] is not None and w_shape[0] % group:
        fail(f"group {group} does not divide the {w_shape[0]} output channels")
    if in_channels is not None and w_shape[1] is not None and in_channels != w_shape[1] * group:
        fail(f"{in_channels} input channels, but the weight takes {w_shape[1]} per group "
             f"x group {group}")
    if x_shape is not None and auto_pad in ("NOTSET", "VALID") and None not in kernel:
        dilations = _ints(node, "dilations", (1,) * rank)
        if auto_pad == "VALID":
            pads = (0,) * (2 * rank)
        for axis, (size, k, d) in enumerate(zip(x_shape[2:], kernel, dilations)):
            if size is None or size == 0:
                continue
            padded = size + pads[axis] + pads[axis + rank]
            if (k - 1) * d + 1 > padded:
                fail(f"kernel {(k - 1) * d + 1} (dilated) is larger than the padded input "
                     f"{padded} on spatial axis {axis}")


def _validate_weight_dq(weight: gs.Tensor, fail) -> None:
    """A constant weight behind a DequantizeLinear whose scale or zero point cannot dequantize
    it (a zero point wired to the weight itself, a per-axis scale of the wrong length):
    onnxruntime fails on it only at run time, and our weight rules would read nonsense."""
    if len(weight.inputs) != 1 or weight.inputs[0].op != "DequantizeLinear":
        return
    dq = weight.inputs[0]
    if len(dq.inputs) < 2 or dq.attrs.get("block_size", 0):
        return
    q, scale = constant_value(dq.inputs[0]), constant_value(dq.inputs[1])
    zero_point = dq.inputs[2] if len(dq.inputs) > 2 and dq.inputs[2].name else None
    zp = None if zero_point is None else constant_value(zero_point)
    if q is None or scale is None or (zero_point is not None and zp is None):
        return                               # not constant: passes decline it with a reason
    bad = quant_params_mismatch(q, int(dq.attrs.get("axis", 1)), scale, zp)
    if bad:
        fail(f"the weight's DequantizeLinear {dq.name!r} {bad}")


def _validate_float_operands(node: gs.Node, fail) -> None:
    """Conv / ConvTranspose: data, weight and bias of one float type (where known), and a bias
    of one value per output channel."""
    roles = ("input", "weight", "bias")
    types = [(role, dtype_name(t)) for role, t in zip(roles, node.inputs) if t.name]
    known = [(role, name) for role, name in types if name != "unknown"]
    for role, name in known:
        if name not in FLOAT_CONV_TYPES:
            fail(f"{role} of type {name}: {node.op} takes {', '.join(FLOAT_CONV_TYPES)}")
    if len({name for _, name in known}) > 1:
        fail("operands of different types: " + ", ".join(f"{r} {n}" for r, n in known))
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return
    w_shape, b_shape = _shape(node.inputs[1]), _shape(node.inputs[2])
    if w_shape is None or b_shape is None or len(w_shape) < 3:
        return
    group = node.attrs.get("group", 1)
    out = w_shape[0] if node.op == "Conv" else (
        None if w_shape[1] is None else w_shape[1] * group)
    if len(b_shape) != 1 or (out is not None and b_shape[0] is not None and b_shape[0] != out):
        fail(f"bias of shape {list(b_shape)}: expected [{out}], one value per output channel")
