"""Conv weights and biases computed from constants, folded into initializers.

Exporters (Caffe2's model zoo: the onnx package's "light" nets) write weights as
``ConstantOfShape`` or other arithmetic on constants, not as initializers. Every lowering slices
the weight, so such a conv was declined ("the weight is not a constant") although its values are
known before the model runs. Here, for each conv the target rejects (or cannot describe: a weight
of unknown shape), an operand that depends on constants only is evaluated once on onnxruntime (the
engine verification compares on, so the folded values are what the original computes there) and
the conv reads an initializer instead. Other readers of the computed tensor are left as they were.
An operand behind a graph input is left to the fixpoint's reason (``runtime_operand``); one behind
a random op, a subgraph or a custom op, or larger than FOLD_LIMIT bytes, is left with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx_read import (IO_POSITIONS, conv_nodes, const_weight, constant_value,
                               runtime_operand, spec_of)
from ..decline import Decline
from ..gs_graph import isolate_region, reimported
from ..legality import check
from ..verify import run
from .protocol import GraphPass, PassResult, RewriteContext

FOLD_LIMIT = 2**28                  # bytes, of the folded value and of anything computing it
SHOWN = 6                           # convs the note names
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                        "Multinomial", "Bernoulli"})


def foldable_operands(node: gs.Node) -> list[tuple[str, gs.Tensor, gs.Node]]:
    """(role, tensor, the node reading it) for ``node``'s weight and bias when computed, not
    constant: for a DequantizeLinear weight, its computed quantized values and parameters (the
    weight stays quantized)."""
    _, w_pos, b_pos = IO_POSITIONS[node.op]
    found = []
    for role, pos in (("weight", w_pos), ("bias", b_pos)):
        if pos is None or len(node.inputs) <= pos or not node.inputs[pos].name:
            continue
        tensor = node.inputs[pos]
        if constant_value(tensor) is not None or (
                role == "weight" and not isinstance(const_weight(tensor), Decline)):
            continue
        producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
        if role == "weight" and producer is not None and producer.op == "DequantizeLinear":
            found += [("weight's DequantizeLinear input", t, producer) for t in producer.inputs
                      if t.name and constant_value(t) is None]
        else:
            found.append((role, tensor, node))
    return found


def producers(tensor: gs.Tensor) -> list[gs.Node] | Decline:
    """The nodes computing ``tensor``, or why its value is not known before the model runs."""
    nodes: list[gs.Node] = []
    stack = [tensor]
    while stack:
        t = stack.pop()
        if isinstance(t, gs.Constant) or not t.name:
            continue
        if not t.inputs:
            return Decline(f"it is computed from graph input {t.name!r}: known only at run time")
        node = t.inputs[0]
        if any(node is n for n in nodes):
            continue
        if node.domain not in ("", "ai.onnx", None):
            return Decline(f"it is computed by {node.domain}.{node.op}, not a standard op")
        if node.op in RANDOM_OPS:
            return Decline(f"it is computed by {node.op}: random, a new value each run")
        if any(isinstance(v, gs.Graph) or (isinstance(v, list) and v and isinstance(
                v[0], gs.Graph)) for v in node.attrs.values()):
            return Decline(f"it is computed by {node.op} with a subgraph")
        big = _known_bytes(node.outputs)
        if big > FOLD_LIMIT:
            return Decline(f"computing it takes a {big}-byte tensor (more than {FOLD_LIMIT})")
        nodes.append(node)
        stack.extend(node.inputs)
    return nodes


def _known_bytes(tensors) -> int:
    """The largest of ``tensors`` whose shape and type are known, in bytes (0 when none is)."""
    sizes = [0]
    for t in tensors:
        shape, dtype = getattr(t, "shape", None), getattr(t, "dtype", None)
        if shape is None or dtype is None or not all(isinstance(d, int) and d >= 0
                                                     for d in shape):
            continue
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype)
                                if isinstance(dtype, int) else dtype).itemsize
        except TypeError:
            continue
        sizes.append(int(np.prod(shape, dtype=np.int64)) * itemsize)
    return max(sizes)


def evaluate(tensor: gs.Tensor, nodes: list[gs.Node], graph: gs.Graph,
             like: onnx.ModelProto) -> np.ndarray | Decline:
    """``tensor``'s value: the nodes computing it, alone as a model without inputs, run once."""
    model = isolate_region(nodes, [], [tensor], graph, like)
    try:
        value = run(model, {})[tensor.name]
    except Exception as exc:        # noqa: BLE001 - whatever the runtime says is the reason
        text = str(exc).strip().splitlines()
        return Decline(f"evaluating it failed: {text[0] if text else type(exc).__name__}")
    if value.nbytes > FOLD_LIMIT:
        return Decline(f"its value has {value.nbytes} bytes (more than {FOLD_LIMIT})")
    return np.asarray(value)


def evaluate_all(wanted: list[tuple[gs.Tensor, list[gs.Node]]], graph: gs.Graph,
                 like: onnx.ModelProto) -> dict[int, np.ndarray | Decline]:
    """``evaluate`` of every (tensor, the nodes computing it) at once: their nodes together as
    one model without inputs, one session and one run instead of one per tensor (a QDQ
    ResNet-18 from onnxruntime's quantizer: 10 sessions for its biases before the lowerings).
    By ``id`` of the tensor; empty where fewer than two or where that run fails (each is then
    evaluated alone, and says its own reason)."""
    if len(wanted) < 2:
        return {}
    nodes: list[gs.Node] = []
    for _, computing in wanted:
        nodes += [n for n in computing if not any(n is m for m in nodes)]
    try:
        values = run(isolate_region(nodes, [], [t for t, _ in wanted], graph, like), {})
    except Exception:               # noqa: BLE001 - each alone says why
        return {}
    out: dict[int, np.ndarray | Decline] = {}
    for tensor, _ in wanted:
        value = values[tensor.name]
        out[id(tensor)] = Decline(f"its value has {value.nbytes} bytes (more than {FOLD_LIMIT})") \
            if value.nbytes > FOLD_LIMIT else np.asarray(value)
    return out


class FoldWeights(GraphPass):
    """Computed weights and biases of rejected convs as initializers (see the module)."""

    name = "fold_weights"

    def run(self, ctx: RewriteContext, like: onnx.ModelProto) -> PassResult:
        result = PassResult(ctx.graph)
        folded: dict[int, gs.Constant | Decline] = {}   # a tensor two convs read: looked at once
        convs: list[str] = []
        ops: set[str] = set()
        ready = evaluate_all(self._wanted(ctx), ctx.graph, like)
        for node in self._convs(ctx):
            for role, tensor, reader in foldable_operands(node):
                constant = folded.get(id(tensor))
                if constant is None:
                    nodes = producers(tensor)
                    value = nodes if isinstance(nodes, Decline) else ready[id(tensor)] \
                        if id(tensor) in ready else evaluate(tensor, nodes, ctx.graph, like)
                    constant = value if isinstance(value, Decline) else \
                        gs.Constant(ctx.fresh(f"{tensor.name}_folded"), value)
                    folded[id(tensor)] = constant
                    ops |= set() if isinstance(value, Decline) else {n.op for n in nodes}
                if isinstance(constant, Decline):
                    result.decline(node, Decline(f"the {role} {tensor.name!r} is not folded: "
                                                 f"{constant.reason}").within(self.name))
                    continue
                for i, t in enumerate(reader.inputs):
                    if t is tensor:
                        reader.inputs[i] = constant
                if node.name not in convs:
                    convs.append(node.name)
        count = sum(isinstance(c, gs.Constant) for c in folded.values())
        if count:
            result.modified = True
            shown = ", ".join(convs[:SHOWN]) + (f" and {len(convs) - SHOWN} more"
                                                 if len(convs) > SHOWN else "")
            result.notes.append(
                f"folded {count} conv weight/bias tensor(s) computed from constants only "
                f"({', '.join(sorted(ops - {'Constant'}) or ['Constant'])}) into initializers, "
                f"so the lowerings can slice them: {shown}")
            ctx.graph = result.graph = reimported(ctx.graph, like)
        return result

    @staticmethod
    def _convs(ctx: RewriteContext):
        """The convs whose computed operands are folded: rejected (or not describable), with
        no operand known only at run time (the fixpoint says why: run time)."""
        for node in conv_nodes(ctx.graph):
            spec = spec_of(node)
            if not isinstance(spec, Decline) and not check(spec, ctx.target) or \
                    runtime_operand(node) is not None:
                continue
            yield node

    def _wanted(self, ctx: RewriteContext) -> list[tuple[gs.Tensor, list[gs.Node]]]:
        """Every operand ``run`` will evaluate (each once) and the nodes computing it, as the
        graph is before any is folded; one folded first can only make another need less."""
        wanted, seen = [], set()
        for node in self._convs(ctx):
            for _, tensor, _ in foldable_operands(node):
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                nodes = producers(tensor)
                if not isinstance(nodes, Decline):
                    wanted.append((tensor, nodes))
        return wanted
