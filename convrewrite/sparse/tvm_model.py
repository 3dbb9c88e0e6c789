"""``--tvm`` builds of sparse models (our SparseConv / SparseInverseConv ops with BatchNorm,
activations, Add/Mul, Concat on the features between them): one Relax module in which every
sparse conv is a ``call_tir`` of our gather-GEMM kernel (``tvm_kernel.py``) and the ops between
them are TVM's own; the rulebooks are built once per input on the host (numpy, shared by layers
with the same sites, kernel and stride, an inverse conv reading its strided conv's backwards) and
passed in as the kernel's output-major pair lists.

TVM's ONNX frontend cannot import our ops, and the standard-ONNX lowering would make TVM run
gathers and scatters; here the model keeps its sparse structure. The built library's ``main``
takes the feature inputs, then per rulebook (``SparseTvmModel.rulebook_keys``) its row_order,
row_ptr, pair_in and pair_tap; ``SparseTvmModel.run`` builds those from the coordinates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..build.onnx_read import constant_value
from ..errors import BadInputError
from ..ops import DOMAIN
from .rulebook import (build_inverse_rulebook, build_rulebook, check_sites, output_sites,
                       reverse)
from ..ops.sparse_conv import (INVERSE_OP_TYPE, OP_TYPE, SparseConvAttrs, node_attrs,
                               optional_input, tap_weights)
from ..tvm.build import TvmCheck, build, export
from ..tvm.kernels.sparse_conv import output_major, sparse_conv_prim_func
from ..tvm.machines import gpu_present, parse_kind, tvm_target
from ..tvm.run import run_executable
from ..verify import Tolerance, compare_outputs, run

GLUE = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "BatchNormalization", "Add", "Sub", "Mul", "Div",
        "Concat", "Identity")


def _batchnorm_affine(node: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    """An inference BatchNormalization as float32 (a, b) with ``y = x * a + b`` per channel."""
    scale, b, mean, var = (np.asarray(constant_value(t), np.float64) for t in node.inputs[1:5])
    a = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    return a.astype(np.float32), (b - mean * a).astype(np.float32)


def has_sparse_convs(model: onnx.ModelProto) -> bool:
    return any(n.domain == DOMAIN and n.op_type in (OP_TYPE, INVERSE_OP_TYPE)
               for n in model.graph.node)


@dataclass
class _Conv:
    node: gs.Node
    attrs: SparseConvAttrs
    inverse: bool
    key: tuple                      # the rulebook it uses
    coords_in: str                  # coordinate tensors (names, Identities followed)
    coords_out: str | None          # inverse: the given fine sites; regular: its output
    absorbed: list = field(default_factory=list)    # the BatchNorm / Relu its kernel applies


def _sole_reader(t: gs.Tensor, outputs: set[str]) -> gs.Node | None:
    """The only node reading ``t`` (as its first input), when ``t`` is not a graph output."""
    if t.name in outputs or len(t.outputs) != 1 or t.outputs[0].inputs[0] is not t:
        return None
    return t.outputs[0]


def _epilogue(conv_node: gs.Node, outputs: set[str]) -> list[gs.Node]:
    """The inference BatchNormalization and / or Relu right after a sparse conv that its kernel
    can apply at write-back: each the sole reader of the one before, none a graph output."""
    absorbed: list[gs.Node] = []
    nxt = _sole_reader(conv_node.outputs[0], outputs)
    if nxt is not None and nxt.op == "BatchNormalization" and len(nxt.outputs) == 1 and all(
            constant_value(t) is not None for t in nxt.inputs[1:5]):
        absorbed.append(nxt)
        nxt = _sole_reader(nxt.outputs[0], outputs)
    if nxt is not None and nxt.op == "Relu":
        absorbed.append(nxt)
    return absorbed


@dataclass
class SparseTvmModel:
    """A sparse model built for TVM (``build``), run on feeds (``run``)."""

    model: onnx.ModelProto
    kind: str = "llvm"
    convs: list = field(default_factory=list)
    rulebook_keys: list = field(default_factory=list)
    feature_inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)         # (name, "features" | "coords")
    alias: dict = field(default_factory=dict)           # coords tensor -> its source tensor
    executable: object = None
    timings: dict = field(default_factory=dict)

    # ------------------------------------------------------------ reading the graph

    def __post_init__(self):
        graph = gs.import_onnx(self.model)
        graph.toposort()
        self.graph = graph
        coords = set()
        for node in graph.nodes:
            if node.domain == DOMAIN and node.op in (OP_TYPE, INVERSE_OP_TYPE):
                coords.add(node.inputs[1].name)
                if node.op == INVERSE_OP_TYPE:
                    coords.add(node.inputs[2].name)
                if len(node.outputs) > 1:
                    coords.add(node.outputs[1].name)
        changed = True
        while changed:          # Identities of coordinates are coordinates
            changed = False
            for node in graph.nodes:
                if node.op == "Identity" and (node.inputs[0].name in coords) != \
                        (node.outputs[0].name in coords):
                    coords |= {node.inputs[0].name, node.outputs[0].name}
                    changed = True
        self.coord_tensors = coords
        for node in graph.nodes:
            if node.op == "Identity" and node.inputs[0].name in coords:
                self.alias[node.outputs[0].name] = self._source(node.inputs[0].name)
        for t in graph.inputs:
            if t.name not in coords:
                if t.dtype is not None and np.dtype(t.dtype) != np.float32:
                    raise BadInputError(f"the TVM sparse path takes float32 features; "
                                        f"{t.name!r} is {np.dtype(t.dtype)}")
                self.feature_inputs.append(t.name)
        self.outputs = [(t.name, "coords" if t.name in coords else "features")
                        for t in graph.outputs]
        graph_outputs = {t.name for t in graph.outputs}
        for node in graph.nodes:
            if node.domain == DOMAIN and node.op in (OP_TYPE, INVERSE_OP_TYPE):
                self.convs.append(self._conv(node))
                self.convs[-1].absorbed = _epilogue(node, graph_outputs)
            elif node.name and node.outputs and node.outputs[0].name in coords:
                continue
            elif node.op not in GLUE:
                raise BadInputError(f"the TVM sparse path runs our sparse convs with "
                                    f"{', '.join(GLUE)} between them; {node.name!r} is {node.op}")

    @property
    def built_rulebooks(self) -> int:
        """Rulebooks built per input (the others are strided convs' read backwards)."""
        return sum(1 for k in self.rulebook_keys if k[-1] != "reversed")

    def _source(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def _conv(self, node: gs.Node) -> _Conv:
        attrs = node_attrs(node)
        inverse = node.op == INVERSE_OP_TYPE
        cin = self._source(node.inputs[1].name)
        if inverse:
            fine = self._source(node.inputs[2].name)
            forward = next((c for c in self.convs if not c.inverse and not c.attrs.submanifold
                            and c.coords_in == fine and c.attrs == attrs
                            and c.coords_out == cin), None)
            key = forward.key + ("reversed",) if forward is not None else \
                ("inverse", cin, fine, attrs)
            conv = _Conv(node, attrs, True, key, cin, fine)
        else:
            out = self._source(node.outputs[1].name) if len(node.outputs) > 1 and \
                node.outputs[1].name else None
            if attrs.submanifold and out is not None:
                self.alias[out] = cin
                out = cin
            conv = _Conv(node, attrs, False, ("conv", cin, attrs), cin, out)
        if conv.key not in self.rulebook_keys:
            self.rulebook_keys.append(conv.key)
        return conv

    # ------------------------------------------------------------ the Relax module

    def relax_module(self):
        from tvm import relax
        from tvm import tirx as tir
        bb = relax.BlockBuilder()
        params, values = [], {}
        sites: dict[str, object] = {}       # site set -> its row count (one symbolic var)

        def rows_of(site: str):
            if site not in sites:
                sites[site] = tir.Var(f"rows{len(sites)}", "int64")
            return sites[site]

        for name in self.feature_inputs:
            t = self.graph.tensors()[name]
            reader = next((c for c in self.convs if c.node.inputs[0].name == name), None)
            rows = rows_of(reader.coords_in) if reader is not None else tir.Var(f"{name}_rows",
                                                                                 "int64")
            var = relax.Var(name, relax.TensorType([rows, int(t.shape[1])], "float32"))
            params.append(var)
            values[name] = var
        layouts = {}
        for i, key in enumerate(self.rulebook_keys):
            conv = next(c for c in self.convs if c.key == key)
            m, p = rows_of(self._out_sites(conv)), tir.Var(f"p{i}", "int64")
            layouts[key] = [relax.Var(f"rb{i}_{what}", relax.TensorType(shape, "int64"))
                            for what, shape in (("row_order", [m]), ("row_ptr", [m + 1]),
                                                ("pair_in", [p]), ("pair_tap", [p]))]
            params += layouts[key]
        kernels: dict = {}
        convs = {id(c.node): c for c in self.convs}
        absorbed = {id(n) for c in self.convs for n in c.absorbed}
        with bb.function("main", params):
            with bb.dataflow():
                for node in self.graph.nodes:
                    if node.outputs and node.outputs[0].name in self.coord_tensors or \
                            id(node) in absorbed:
                        continue
                    conv = convs.get(id(node))
                    if conv is not None:
                        y = self._emit_conv(bb, conv, values, layouts[conv.key], kernels)
                        node = conv.absorbed[-1] if conv.absorbed else node
                    else:
                        y = self._emit_glue(bb, node, values)
                    values[node.outputs[0].name] = y
                outs = [values[n] for n, kind in self.outputs if kind == "features"]
                result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
            bb.emit_func_output(result)
        return bb.get()

    @staticmethod
    def _out_sites(conv: _Conv) -> str:
        if conv.inverse or not conv.attrs.submanifold:
            return conv.coords_out or f"{conv.node.name}/sites"
        return conv.coords_in

    def _emit_conv(self, bb, conv: _Conv, values: dict, layout: list, kernels: dict):
        from tvm import relax
        node = conv.node
        w_index = 3 if conv.inverse else 2
        weight = constant_value(node.inputs[w_index])
        bias_in = optional_input(node, w_index + 1)
        cout, cin = weight.shape[:2]
        bias = np.zeros(cout, np.float32) if bias_in is None else constant_value(bias_in)
        ops = [n.op for n in conv.absorbed]
        epilogue = {(): "none", ("BatchNormalization",): "affine", ("Relu",): "relu",
                    ("BatchNormalization", "Relu"): "affine_relu"}[tuple(ops)]
        shape = (cin, cout, conv.attrs.kernel_volume)
        if (shape, epilogue) not in kernels:
            name = f"sparse_conv_{cin}x{cout}x{shape[2]}" + \
                ("" if epilogue == "none" else f"_{epilogue}")
            func = sparse_conv_prim_func(*shape, self.kind, epilogue).with_attr(
                "global_symbol", name).with_attr("tirx.is_scheduled", True)  # dlight: leave it
            kernels[shape, epilogue] = bb.add_func(func, name)
        extra = []
        if epilogue != "none":
            scale, shift = np.ones(cout, np.float32), np.zeros(cout, np.float32)
            if ops[0] == "BatchNormalization":
                scale, shift = _batchnorm_affine(conv.absorbed[0])
            extra = [relax.const(scale), relax.const(shift)]
        rows = layout[0].ty.shape[0]
        return bb.emit(relax.call_tir(
            kernels[shape, epilogue], [values[node.inputs[0].name],
                                       relax.const(tap_weights(weight).astype(np.float32)),
                                       relax.const(np.asarray(bias, np.float32)), *extra,
                                       *layout],
            relax.TensorType([rows, cout], "float32")))

    @staticmethod
    def _emit_glue(bb, node: gs.Node, values: dict):
        from tvm import relax
        op = relax.op

        def arg(t):
            if t.name in values:
                return values[t.name]
            value = constant_value(t)
            if value is None:
                raise BadInputError(f"{node.name!r} reads {t.name!r}, neither features nor a "
                                    "constant")
            v = np.asarray(value, np.float32)
            return relax.const(v.reshape(-1) if v.size > 1 and v.ndim > 1 else v)

        x = node.inputs
        if node.op == "Identity":
            return values[x[0].name]
        if node.op == "Relu":
            return bb.emit(op.nn.relu(arg(x[0])))
        if node.op == "LeakyRelu":
            return bb.emit(op.nn.leakyrelu(arg(x[0]), float(node.attrs.get("alpha", 0.01))))
        if node.op in ("Sigmoid", "Tanh"):
            return bb.emit(getattr(op, node.op.lower())(arg(x[0])))
        if node.op == "BatchNormalization":     # inference: x * a + b per channel
            a, b = _batchnorm_affine(node)
            return bb.emit(op.add(op.multiply(arg(x[0]), relax.const(a)), relax.const(b)))
        if node.op == "Concat":
            return bb.emit(op.concat([arg(t) for t in x], axis=1))
        fn = {"Add": op.add, "Sub": op.subtract, "Mul": op.multiply, "Div": op.divide}[node.op]
        return bb.emit(fn(arg(x[0]), arg(x[1])))

    def build(self) -> "SparseTvmModel":
        started = time.perf_counter()
        self.executable = build(self.relax_module(), self.kind)
        self.timings["build"] = time.perf_counter() - started
        return self

    # ------------------------------------------------------------ running

    def rulebooks(self, feeds: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """(rulebook key -> Rulebook, coordinates tensor -> value): each built once."""
        coords = {}
        for t in self.graph.inputs:
            if t.name in self.coord_tensors:
                coords[t.name] = np.asarray(feeds[t.name])
        for name, t in self.graph.tensors().items():
            value = constant_value(t) if name in self.coord_tensors else None
            if value is not None:
                coords[name] = value
        books: dict = {}
        sites: dict = {}        # (coordinates tensor, grid) -> Sites: checked, sorted once
        for conv in self.convs:
            if conv.key not in books:
                if conv.key[-1] == "reversed":
                    books[conv.key] = reverse(books[conv.key[:-1]], coords[conv.coords_out])
                elif conv.inverse:
                    books[conv.key] = build_inverse_rulebook(coords[conv.coords_in],
                                                             coords[conv.coords_out], conv.attrs)
                else:
                    at = (conv.coords_in, tuple(conv.attrs.spatial_shape))
                    if at not in sites:
                        sites[at] = check_sites(coords[conv.coords_in], conv.attrs)
                    books[conv.key] = build_rulebook(coords[conv.coords_in], conv.attrs, sites[at])
            if not conv.inverse and conv.coords_out is not None and not conv.attrs.submanifold:
                coords[conv.coords_out] = books[conv.key].out_coords
                sites.setdefault((conv.coords_out, tuple(conv.attrs.out_spatial_shape)),
                                 output_sites(books[conv.key]))
        return books, coords

    def arguments(self, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], dict]:
        """The executable's arguments for these feeds (rulebooks built here), and the
        coordinates of every coordinate tensor."""
        books, coords = self.rulebooks(feeds)
        args = [np.ascontiguousarray(feeds[n], np.float32) for n in self.feature_inputs]
        for key in self.rulebook_keys:
            layout = output_major(books[key])
            args += [layout.row_order, layout.row_ptr, layout.pair_in, layout.pair_tap]
        return args, coords

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args, coords = self.arguments(feeds)
        features = iter(run_executable(self.executable, self.kind, args))
        return {name: next(features) if kind == "features" else
                coords[self._source(name)] for name, kind in self.outputs}


def check_sparse_model(model: onnx.ModelProto, reference: onnx.ModelProto, kind: str,
                       feeds: dict[str, np.ndarray], tolerance=None, out_dir=None):
    """What ``--tvm`` does for a sparse model: build it with our kernel, run it where it can,
    compare with ``reference`` (the rewritten model) on onnxruntime."""
    kind = parse_kind(kind)
    target = tvm_target(kind)
    result = TvmCheck(kind, str(target.attrs.get("mcpu") or target.attrs.get("arch") or kind),
                      True)
    sparse = SparseTvmModel(model, kind)
    sparse.build()
    result.timings["build"] = sparse.timings["build"]
    built = sparse.built_rulebooks
    backwards = len(sparse.rulebook_keys) - built
    result.sparse = {"convs": len(sparse.convs), "rulebooks": built, "read_backwards": backwards,
                     "summary": f"{len(sparse.convs)} sparse convs on our gather-GEMM kernel, "
                                f"{built} rulebooks built once per input"
                                + (f" ({backwards} read backwards by inverse convs)"
                                   if backwards else "")}
    if out_dir is not None:
        result.exported = export(sparse.executable, kind, out_dir)
    if kind == "cuda" and not gpu_present():
        result.skipped = "no CUDA GPU on this machine"
        return result
    started = time.perf_counter()
    actual = sparse.run(feeds)
    result.timings["run"] = time.perf_counter() - started
    expected = run(reference, feeds)
    names = [o.name for o in model.graph.output]
    result.ran = True
    result.comparison = compare_outputs(expected, actual, names, tolerance or Tolerance(),
                                        "reassociating")
    return result


def sparse_check(model: onnx.ModelProto, reference: onnx.ModelProto, kind: str,
                 feeds: dict[str, np.ndarray], tolerance=None, out_dir=None):
    """``check_sparse_model``, or None when the model has ops the sparse path does not build (the
    caller then builds the standard-ONNX lowering, as for any model)."""
    try:
        SparseTvmModel(model, kind)
    except BadInputError:
        return None
    return check_sparse_model(model, reference, kind, feeds, tolerance, out_dir)
