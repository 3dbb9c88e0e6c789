"""Sparse regions of a dense model: from a tensor named mostly zero (``--sparse-input``), the part
of the graph that can run on the active sites alone, as one sparse sub-network.

A tensor of the region is its values at the active sites (features [n, C], one row per site)
and its **background**: what it holds everywhere else. The background does not depend on the
input: at a site no active input reaches, every tensor of the region holds what it would hold if
the whole input were inactive. So it is computed here, at rewrite time, op by op (onnxruntime
runs each op on the backgrounds of its inputs): 0 for the sparse input itself, a conv's bias after
a conv, ReLU of that after a ReLU, ... -- one value per channel, or, where a padded conv reads a
non-zero background (its windows at the border see zero padding), a constant map of the grid.

* a Conv reading a region tensor becomes a SparseConv on (values - background) at the active
  sites, plus the conv of the background (a bias when uniform, else a map sampled at the output
  sites): regular (the active set dilates), or submanifold where the conv's only reader is
  ``Mul(conv, mask)`` with the mask the sites came from (masked-image models: the output is kept
  on the mask's sites only);
* pointwise ops (activations, BatchNormalization, Add/Sub/Mul/Div/Max/Min/PRelu with another
  tensor on the same sites or a per-channel constant, Concat of channels) run on the features
  and on the background;
* a tensor is densified once (ScatterND of its values onto its background, back to [B, C, ...])
  where a dense op or a graph output reads it.

Exact, up to the order of floating-point sums. Rulebooks of SparseConvs reading the same sites
with the same kernel and stride are shared when they are lowered (``lower.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from ..build.onnx import OnnxBuilder
from ..build.onnx_read import constant_value, spec_of
from ..decline import Decline
from ..ops import DOMAIN
from ..ops.sparse_conv import OP_TYPE, SparseConvAttrs, SparseConvError
from ..verify import run
from .plan import Activity, choose

MAP_LIMIT = 1 << 22     # most elements of a background map (16 MB of float32); beyond: densify

UNARY = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Elu", "Selu", "Celu",
                   "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Gelu", "Mish", "Abs",
                   "Neg", "Identity", "Erf", "Exp", "Sqrt", "Reciprocal", "ThresholdedRelu"})
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu", "Pow"})
# ops the region emits around the SparseConvs (their lowering adds its own)
REGION_OPS = frozenset({"Abs", "ReduceSum", "Greater", "NonZero", "Transpose", "GatherND",
                        "Gather", "Reshape", "ScatterElements", "Unsqueeze", "Shape", "Concat",
                        "ConstantOfShape", "CastLike", "Sub", "Add", "Mul", "Squeeze", "Equal",
                        "Not", "Expand", "Slice"})


class Densify(Exception):
    """A node the region cannot take; the message says why (it reads its inputs dense)."""


@dataclass(eq=False)
class Sites:
    """One set of active sites: coordinates [n, 1 + D] int64 (batch, then the grid's dims)."""

    coords: gs.Tensor
    grid: tuple[int, ...]
    mask: gs.Tensor | None = None           # the mask these are the non-zeros of
    mask_values: gs.Tensor | None = None    # [n, 1]: the mask at the sites
    spatial: gs.Tensor | None = None        # [n, D] int64, made when a map is sampled
    flat: gs.Tensor | None = None           # [n] int64 batch x volume + row-major position
    activity: Activity | None = None        # the active fraction expected (``plan``)


@dataclass(eq=False)
class Value:
    """A tensor of the region: features at the sites and the background elsewhere ([C] or
    [C, *grid])."""

    features: gs.Tensor
    sites: Sites
    background: np.ndarray

    @property
    def channels(self) -> int:
        return len(self.background)


def _uniform(bg: np.ndarray) -> np.ndarray:
    """A map that holds one value per channel, as that [C] vector."""
    if bg.ndim > 1:
        flat = bg.reshape(len(bg), -1)
        if np.array_equal(flat.min(axis=1), flat.max(axis=1)):
            return np.ascontiguousarray(flat[:, 0])
    return bg


def _broadcast(bg: np.ndarray, rank: int) -> np.ndarray:
    """[1, C, 1...] (uniform) or [1, C, *grid]: a background laid out as the dense tensor."""
    return bg.reshape(1, len(bg), *([1] * rank)) if bg.ndim == 1 else bg[None]


def _run_node(node: gs.Node, values: dict[str, np.ndarray], opset: int) -> list[np.ndarray]:
    """Run one node on constant inputs (onnxruntime): the background of what it computes."""
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in values.items()]
    outs = [o.name for o in node.outputs if o.name]
    proto = helper.make_node(node.op, [t.name for t in node.inputs], outs, domain=node.domain,
                             **node.attrs)
    graph = helper.make_graph([proto], "background", [],
                              [onnx.ValueInfoProto(name=o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    result = run(model, {})
    return [result[o] for o in outs]


@dataclass
class Region:
    """The sparse region grown from one named tensor; ``build`` walks the graph once."""

    named: gs.Tensor
    mode: str                       # "data" or "mask"
    graph: gs.Graph
    opset: int
    e: OnnxBuilder
    constant_mask: np.ndarray | None = None
    fraction: float | None = None   # the input's expected active fraction; None: every conv
    #                                 that can run sparse does (no cost choice, ``plan``)
    sample: np.ndarray | None = None    # a real value of the input: the plan follows its sites
    values: dict = field(default_factory=dict)          # tensor name -> Value
    taken: list = field(default_factory=list)           # original nodes the region replaces
    kept: list = field(default_factory=list)            # ... that stay too (dense readers)
    entries: list = field(default_factory=list)         # dense tensors the region reads
    exits: list = field(default_factory=list)           # tensors it densifies
    convs: list = field(default_factory=list)           # (conv name, SparseConvAttrs)
    notes: list = field(default_factory=list)
    declined: list = field(default_factory=list)        # (conv name, reason)
    macs: int = 0
    sites: Sites | None = None
    entry_muls: set = field(default_factory=set)        # ids of the Mul(x, mask) nodes taken

    # ------------------------------------------------------------ walking the graph

    def build(self) -> None:
        rank = self._rank()
        self.sites = self._root_sites(rank)
        self.entries.append(self.named)
        if self.mode == "data":
            self.values[self.named.name] = Value(self._gather(self.named, self.sites, rank),
                                                 self.sites,
                                                 np.zeros(self.named.shape[1], self._dtype()))
        done: set[int] = set()
        for node in list(self.graph.nodes):
            if id(node) in done or not node.outputs:
                continue
            ins = [t for t in node.inputs if t.name in self.values]
            if self.mode == "mask" and not ins and self._is_mask_entry(node):
                self._mask_entry(node, rank)
                continue
            if not ins:
                continue
            try:
                absorbed = self._take(node, rank)
            except Densify as reason:
                if node.op == "Conv":
                    self.declined.append((node.name, str(reason)))
                else:
                    self.notes.append(f"densified for {node.name} ({node.op}): {reason}")
                continue
            done.update(id(n) for n in absorbed)
            self.taken.extend(absorbed)
        self._find_exits()

    def _rank(self) -> int:
        shape = self.named.shape
        if shape is None or len(shape) not in (4, 5) or any(not isinstance(d, int)
                                                              for d in shape[1:]):
            raise Densify(f"{self.named.name!r} must be [B, C, H, W] or [B, C, D, H, W] with static "
                          f"channels and spatial sizes, is {shape}")
        if self.mode == "mask" and shape[1] != 1:
            raise Densify(f"a mask must be [B, 1, spatial], {self.named.name!r} is {shape}")
        return len(shape) - 2

    def _dtype(self):
        return np.dtype(self.named.dtype) if self.named.dtype is not None else np.dtype(np.float32)

    def _root_sites(self, rank: int) -> Sites:
        e, named = self.e, self.named
        grid = tuple(named.shape[2:])
        if self.constant_mask is not None:
            coords = e.const("sites", np.argwhere(self.constant_mask[:, 0] != 0).astype(np.int64))
        else:
            zero = e.op("CastLike", [e.const("zero", np.float32(0)), named], "zero")
            if self.mode == "mask":
                squeezed = e.op("Squeeze", [named, e.i64("axis1", [1])], "mask_sites")
                active = e.op("Not", [e.op("Equal", [squeezed, zero], "masked_out")], "active")
            else:
                size = e.op("ReduceSum", [e.op("Abs", [named], "abs"), e.i64("axis1", [1])],
                            "magnitude", keepdims=0)
                active = e.op("Greater", [size, zero], "active")
            coords = e.op("Transpose", [e.op("NonZero", [active], "sites_t")], "sites",
                          perm=[1, 0])
        sites = Sites(coords, grid)
        if self.fraction is not None:
            sites.activity = self._activity(rank)
        if self.mode == "mask":
            sites.mask = named
            sites.mask_values = self._gather(named, sites, rank)
        return sites

    def _activity(self, rank: int) -> Activity:
        """The root sites' activity: exact from a constant mask or a real value of the input
        (``sample``), else the declared fraction, spread at random."""
        value = self.constant_mask if self.constant_mask is not None else self.sample
        if value is not None and value.ndim == rank + 2 and \
                tuple(value.shape[2:]) == tuple(self.named.shape[2:]):
            return Activity.of_sites(np.any(value != 0, axis=1))
        return Activity.of_root(self.fraction, rank)

    def _gather(self, dense: gs.Tensor, sites: Sites, rank: int) -> gs.Tensor:
        """[n, C]: the dense [B, C, *S] tensor at the sites, gathered from its [C, B x V] view
        (a reshape, not a transpose, at batch 1: the whole tensor is never laid out again)."""
        e = self.e
        batched = e.op("Reshape", [dense, e.i64("bcv", [0, 0, -1])], "bcv")
        columns = e.op("Reshape", [e.op("Transpose", [batched], "cbv", perm=[1, 0, 2]),
                                   e.i64("c_bv", [dense.shape[1], -1])], "channel_rows")
        picked = e.op("Gather", [columns, self._flat(sites)], "picked", axis=1)
        return e.op("Transpose", [picked], "features", perm=[1, 0])

    def _flat(self, sites: Sites) -> gs.Tensor:
        """The sites' positions in the [B x V] view, made once per set of sites."""
        if sites.flat is None:
            strides = [int(np.prod(sites.grid))] + [int(np.prod(sites.grid[i + 1:]))
                                                     for i in range(len(sites.grid))]
            scaled = self.e.op("Mul", [sites.coords, self.e.i64("flat_strides", strides)],
                               "scaled_sites")
            sites.flat = self.e.op("ReduceSum", [scaled, self.e.i64("axis1s", [1])], "flat_sites",
                                   keepdims=0)
        return sites.flat

    def _is_mask_entry(self, node: gs.Node) -> bool:
        if node.op != "Mul" or len(node.inputs) != 2 or not any(t is self.named
                                                                for t in node.inputs):
            return False
        other = node.inputs[0] if node.inputs[1] is self.named else node.inputs[1]
        shape = other.shape
        return (other is not self.named and shape is not None and len(shape) == len(
            self.named.shape) and tuple(shape[2:]) == self.sites.grid
                and isinstance(shape[1], int) and constant_value(other) is None)

    def _mask_entry(self, node: gs.Node, rank: int) -> None:
        """``Mul(x, mask)``: x at the mask's sites times the mask there; 0 elsewhere."""
        x = node.inputs[0] if node.inputs[1] is self.named else node.inputs[1]
        gathered = self._gather(x, self.sites, rank)
        features = self.e.op("Mul", [gathered, self.sites.mask_values], "masked")
        self.values[node.outputs[0].name] = Value(features, self.sites,
                                                  np.zeros(x.shape[1], self._dtype()))
        self.entries.append(x)
        self.taken.append(node)
        self.entry_muls.add(id(node))

    def _find_exits(self) -> None:
        inside = {id(n) for n in self.taken} | {id(n) for n in self.e.nodes}
        outputs = {id(t) for t in self.graph.outputs}
        tensors = self.graph.tensors()
        for name in list(self.values):
            t = tensors[name]
            if t is self.named:
                continue
            dense_readers = [n for n in t.outputs if id(n) not in inside]
            if not dense_readers and id(t) not in outputs:
                continue
            producer = t.inputs[0] if t.inputs else None
            if producer is not None and id(producer) in self.entry_muls:
                self.kept.append(producer)      # an entry Mul: its dense output stays as it is
                continue
            self.exits.append(t)

    # ------------------------------------------------------------ one node

    def _take(self, node: gs.Node, rank: int) -> list[gs.Node]:
        """Emit the node's sparse form; the original nodes it replaces (Conv + Mul absorbed)."""
        if node.op == "Conv":
            return self._conv(node, rank)
        if len([o for o in node.outputs if o.name]) != 1:
            raise Densify(f"{node.op} with {len(node.outputs)} outputs")
        if node.op in UNARY or node.op == "BatchNormalization":
            self._pointwise(node, node.inputs[0], rank)
        elif node.op in BINARY:
            self._binary(node, rank)
        elif node.op == "Concat":
            self._concat(node)
        else:
            raise Densify(f"{node.op} has no sparse form here")
        return [node]

    def _constants(self, node: gs.Node, skip: gs.Tensor | None = None) -> dict[str, np.ndarray]:
        """The node's inputs other than region tensors, which must be constants."""
        out = {}
        for t in node.inputs:
            if t is skip or not t.name or t.name in self.values:
                continue
            value = constant_value(t)
            if value is None:
                raise Densify(f"it also reads the dense tensor {t.name!r}")
            out[t.name] = value
        return out

    def _pointwise(self, node: gs.Node, x: gs.Tensor, rank: int) -> None:
        v = self.values[x.name]
        if node.op == "BatchNormalization" and (node.attrs.get("training_mode", 0)
                                                or len(node.outputs) > 1):
            raise Densify("BatchNormalization in training mode")
        consts = self._constants(node, x)
        background = _run_node(node, {x.name: _broadcast(v.background, rank), **consts},
                               self.opset)[0][0]
        inputs = [v.features] + [self.e.const(t.name, consts[t.name]) if t.name else
                                 gs.Variable.empty() for t in node.inputs[1:]]
        out = self.e.op(node.op, inputs, node.name, **node.attrs)
        self._set(node.outputs[0], Value(out, v.sites, _uniform(self._squeeze(background, v))))

    def _squeeze(self, bg: np.ndarray, like: Value) -> np.ndarray:
        """A node's background output [C, 1...] or [C, *grid] as [C] or [C, *grid]."""
        if bg.shape[1:] and all(d == 1 for d in bg.shape[1:]):
            return bg.reshape(len(bg))
        if bg.shape[1:] != like.sites.grid:
            raise Densify(f"its background has shape {list(bg.shape)}")
        return bg

    @staticmethod
    def _channel_constant(value: np.ndarray, channels: int, rank: int) -> np.ndarray:
        """A constant that only varies along channels, as [C] or [1]; else Densify."""
        v = np.asarray(value)
        if v.size == 1:
            return v.reshape(1)
        shape = (1,) * (rank + 2 - v.ndim) + v.shape if v.ndim <= rank + 2 else None
        if shape is None or shape[1] != channels or any(d != 1 for i, d in enumerate(shape)
                                                         if i != 1):
            raise Densify(f"its constant operand {list(v.shape)} is not one value per channel")
        return v.reshape(channels)

    def _binary(self, node: gs.Node, rank: int) -> None:
        a, b = node.inputs[0], node.inputs[1]
        va, vb = self.values.get(a.name), self.values.get(b.name)
        if va is not None and vb is not None:
            if va.sites is not vb.sites:
                raise Densify("its operands are on different sites")
            inputs = [va.features, vb.features]
            backgrounds = {a.name: _broadcast(va.background, rank),
                           b.name: _broadcast(vb.background, rank)}
            like = va
        else:
            like, mine, other = (va, a, b) if va is not None else (vb, b, a)
            if node.op == "Mul" and other is like.sites.mask:   # back onto the mask's sites
                out = self.e.op("Mul", [like.features, like.sites.mask_values], node.name)
                self._set(node.outputs[0], Value(out, like.sites,
                                                 np.zeros(like.channels, like.background.dtype)))
                return
            value = constant_value(other)
            if value is None:
                raise Densify(f"it also reads the dense tensor {other.name!r}")
            const = self.e.const(f"{node.name}.operand",
                                 self._channel_constant(value, like.channels, rank))
            inputs = [like.features, const] if va is not None else [const, like.features]
            backgrounds = {mine.name: _broadcast(like.background, rank), other.name: value}
        background = _run_node(node, backgrounds, self.opset)[0][0]
        out = self.e.op(node.op, inputs, node.name, **node.attrs)
        self._set(node.outputs[0], Value(out, like.sites, _uniform(self._squeeze(background,
                                                                                 like))))

    def _concat(self, node: gs.Node) -> None:
        rank = len(self.sites.grid)
        axis = int(node.attrs.get("axis", 0))
        if axis not in (1, -(rank + 1)):
            raise Densify(f"Concat along axis {axis}, not channels")
        parts = [self.values.get(t.name) for t in node.inputs]
        if any(p is None for p in parts) or any(p.sites is not parts[0].sites for p in parts):
            raise Densify("it joins tensors on other sites, or dense ones")
        grid = parts[0].sites.grid
        if any(p.background.ndim > 1 for p in parts):
            bgs = [p.background if p.background.ndim > 1 else np.broadcast_to(
                p.background.reshape(-1, *([1] * rank)), (p.channels, *grid)) for p in parts]
        else:
            bgs = [p.background for p in parts]
        out = self.e.op("Concat", [p.features for p in parts], node.name, axis=1)
        self._set(node.outputs[0], Value(out, parts[0].sites, _uniform(np.concatenate(bgs))))

    def _set(self, tensor: gs.Tensor, value: Value) -> None:
        self.values[tensor.name] = value

    # ------------------------------------------------------------ convs

    def _conv(self, conv: gs.Node, rank: int) -> list[gs.Node]:
        v = self.values.get(conv.inputs[0].name)
        if v is None:
            raise Densify("the sparse tensor is its weight, not its input")
        spec = spec_of(conv)
        if isinstance(spec, Decline):
            raise Densify(spec.reason)
        if spec.groups != 1:
            raise Densify(f"grouped convs (group {spec.groups}) have no sparse form here")
        if spec.auto_pad not in ("NOTSET", ""):
            raise Densify(f"auto_pad {spec.auto_pad}")
        weight = constant_value(conv.inputs[1])
        if weight is None:
            raise Densify("the weight must be constant")
        bias = constant_value(conv.inputs[2]) if spec.has_bias else None
        if spec.has_bias and bias is None:
            raise Densify("the bias must be constant")
        mul = self._submanifold_mul(conv, spec, v)
        try:
            attrs = SparseConvAttrs.create(spec.kernel_shape, v.sites.grid, spec.strides,
                                           None if mul is not None else spec.pads, spec.dilations,
                                           mul is not None)
        except SparseConvError as exc:
            raise Densify(str(exc)) from None
        cout = spec.out_channels
        self._cheaper_sparse(conv, attrs, spec, v)
        if not np.any(v.background):
            features, sparse_bias, out_map = v.features, bias, None
            background = np.zeros(cout, weight.dtype) if bias is None else bias.astype(
                weight.dtype)
        else:       # conv(x) = conv(background) + conv without bias(x - background)
            features = self.e.op("Sub", [v.features, self._sample(v)], f"{conv.name}/less_bg")
            background = self._conv_background(conv, v, weight, bias, attrs, rank)
            uniform = background.ndim == 1
            sparse_bias, out_map = (background, None) if uniform else (None, background)
        w = self.e.const(f"{conv.name}.W", weight)
        inputs = [features, v.sites.coords, w]
        if sparse_bias is not None:
            inputs.append(self.e.const(f"{conv.name}.B", sparse_bias.astype(weight.dtype)))
        out = gs.Variable(self.e.fresh(f"{conv.name}/sparse_out"), dtype=conv.outputs[0].dtype)
        coords = gs.Variable(self.e.fresh(f"{conv.name}/coords"), dtype=np.int64)
        self.e.nodes.append(gs.Node(OP_TYPE, self.e.fresh(f"{conv.name}/sparse_conv"),
                                    attrs.to_node_attrs(), inputs, [out, coords], domain=DOMAIN))
        sites = v.sites if attrs.submanifold else Sites(
            coords, attrs.out_spatial_shape,
            activity=None if v.sites.activity is None else v.sites.activity.after(attrs))
        self.convs.append((conv.name, attrs))
        self.macs += spec.macs or 0
        if mul is not None:             # values on the mask's sites, 0 elsewhere
            masked = self.e.op("Mul", [out, v.sites.mask_values], f"{conv.name}/masked")
            self._set(mul.outputs[0], Value(masked, v.sites, np.zeros(cout, weight.dtype)))
            return [conv, mul]
        if out_map is not None:
            out = self.e.op("Add", [out, self._sample(Value(out, sites, out_map))],
                            f"{conv.name}/plus_bg")
        self._set(conv.outputs[0], Value(out, sites, background))
        return [conv]

    def _cheaper_sparse(self, conv: gs.Node, attrs: SparseConvAttrs, spec, v: Value) -> None:
        """Densify where the dense conv is cheaper than the sparse one (``plan``); the choice
        goes into the record either way."""
        if v.sites.activity is None or spec.macs is None:
            return
        choice = choose(attrs, spec.in_channels, spec.out_channels, spec.macs, v.sites.activity,
                        entering=not self.convs)
        if not choice.sparse:
            raise Densify(f"the dense conv is cheaper: {choice.why}")
        self.notes.append(f"{conv.name} sparse: {choice.why}")

    def _submanifold_mul(self, conv: gs.Node, spec, v: Value) -> gs.Node | None:
        """The ``Mul(conv, mask)`` that makes ``conv`` submanifold, or None: the sites are the
        mask's, the background 0, stride 1 and the kernel centred."""
        mask = v.sites.mask
        readers = conv.outputs[0].outputs
        if mask is None or np.any(v.background) or len(readers) != 1 \
                or any(t is conv.outputs[0] for t in self.graph.outputs):
            return None
        mul = readers[0]
        if mul.op != "Mul" or not any(t is mask for t in mul.inputs):
            return None
        same = tuple((k // 2) * d for k, d in zip(spec.kernel_shape, spec.dilations)) * 2
        if any(s != 1 for s in spec.strides) or any(k % 2 == 0 for k in spec.kernel_shape) \
                or tuple(spec.pads) != same:
            return None
        return mul

    def _conv_background(self, conv, v: Value, weight, bias, attrs: SparseConvAttrs,
                         rank: int) -> np.ndarray:
        """The conv of the input's background: [Cout] where every window lies inside the grid
        (or the background is uniform and no window reaches the padding), else a map."""
        inside = all(p == 0 for p in attrs.pads_begin) and all(
            (o - 1) * s + d * (k - 1) < g for o, s, d, k, g in zip(
                attrs.out_spatial_shape, attrs.strides, attrs.dilations, attrs.kernel_shape,
                attrs.spatial_shape))
        if v.background.ndim == 1 and inside:
            total = weight.reshape(weight.shape[0], weight.shape[1], -1).sum(axis=2)
            out = total.astype(np.float64) @ v.background.astype(np.float64)
            if bias is not None:
                out = out + bias
            return out.astype(weight.dtype)
        size = int(np.prod(attrs.out_spatial_shape)) * weight.shape[0]
        if max(size, v.background.size) > MAP_LIMIT and v.background.ndim > 1 or \
                size > MAP_LIMIT:
            raise Densify(f"a padded conv over a non-zero background needs a background map of "
                          f"{size} values (limit {MAP_LIMIT})")
        dense = _broadcast(v.background, rank) * np.ones((1, 1, *v.sites.grid),
                                                         v.background.dtype)
        inputs = {conv.inputs[0].name: dense.astype(weight.dtype),
                  conv.inputs[1].name: weight}
        if bias is not None:
            inputs[conv.inputs[2].name] = bias
        return _uniform(_run_node(conv, inputs, self.opset)[0][0])

    def _sample(self, v: Value) -> gs.Tensor:
        """The background at the value's sites: [C] (broadcasts) or GatherND of the map."""
        if v.background.ndim == 1:
            return self.e.const("background", v.background)
        sites = v.sites
        if sites.spatial is None:
            rank = len(sites.grid)
            sites.spatial = self.e.op("Slice", [sites.coords, self.e.i64("s1", [1]),
                                                self.e.i64("e1", [1 + rank]),
                                                self.e.i64("ax1", [1])], "spatial")
        last = np.ascontiguousarray(np.moveaxis(v.background, 0, -1))
        return self.e.op("GatherND", [self.e.const("background_map", last), sites.spatial],
                         "background_at_sites")

    # ------------------------------------------------------------ leaving the region

    def densify(self) -> None:
        """Each exit tensor rebuilt dense: its values (transposed, [C, n]) scattered onto its
        background laid out [C, B x V] (ScatterElements along the positions), which is the dense
        [B, C, *S] after a transpose that only moves the batch (a copy at batch 1)."""
        e = self.e
        rank = len(self.sites.grid)
        batch = e.op("Shape", [self.named], "batch", start=0, end=1)
        for t in self.exits:
            v = self.values[t.name]
            volume = int(np.prod(v.sites.grid))
            values = e.op("Transpose", [v.features], "channel_values", perm=[1, 0])
            where = e.op("Expand", [e.op("Unsqueeze", [self._flat(v.sites), e.i64("axis0f", [0])],
                                         "flat_row"), e.op("Shape", [values], "values_shape")],
                         "positions")
            shape = e.op("Concat", [e.i64("channels", [v.channels]), batch,
                                    e.i64("volume", [volume])], "cbv_shape", axis=0)
            if not np.any(v.background):
                base = e.zeros(shape, v.features, "background")
            else:
                bg = v.background.reshape(v.channels, 1, -1)    # [C, 1, 1] or [C, 1, V]
                base = e.op("Expand", [e.const("background_value", bg), shape], "background")
            flat = e.op("Reshape", [base, e.i64("c_bv", [v.channels, -1])], "background_rows")
            scattered = e.op("ScatterElements", [flat, where, values], "scatter", axis=1)
            grid = e.op("Reshape", [scattered, e.op("Concat", [
                e.i64("c", [v.channels]), batch, e.i64("grid", list(v.sites.grid))],
                "cb_grid_shape", axis=0)], "cb_grid")
            e.op("Transpose", [grid], "dense", out=t, perm=[1, 0, *range(2, rank + 2)])
