"""spconv 2.x models in: a ``SparseSequential`` (or ``nn.Sequential``) tree of SubMConv /
SparseConv / SparseInverseConv / BatchNorm1d / activations becomes an ONNX model of our ops, its
weights converted ([Cout, k..., Cin] -> ONNX's [Cout, Cin, k...]), and the result checked against
spconv's own forward on the same voxels.

Two stages, so that only the first needs torch and spconv (neither is a dependency of ours:
``pip install 'convrewrite[spconv]'`` in an environment of its own):

* ``describe(module)`` reads the module tree into plain ``Layer`` records (kind, attributes,
  numpy weights) -- ``save_layers`` / ``load_layers`` keep them in an .npz;
* ``to_onnx(layers, spatial_shape, in_channels)`` builds the model from them, numpy and onnx only.

What spconv decides at run time is decided here the same way (including how it reads a 1x1
conv's weight, see ``_onnx_weight``): a regular conv's output grid is
``(S + 2p - d(k-1) - 1) // s + 1``; a SubM conv keeps its input's sites; a SparseInverseConv goes
back onto the input sites (and grid) of the SparseConv with the same ``indice_key``, with that
conv's stride, padding and dilation -- in the lowered model it reuses that conv's rulebook read
backwards. SubM layers sharing an ``indice_key`` share one rulebook there too (same sites, same
kernel).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import BadInputError
from ..ops import DOMAIN, DOMAIN_VERSION
from ..ops.sparse_conv import INVERSE_OP_TYPE, OP_TYPE, SparseConvAttrs, onnx_weight_from_spconv

CONV_KINDS = ("subm", "conv", "inverse")
ACTIVATIONS = {"ReLU": "Relu", "LeakyReLU": "LeakyRelu", "Sigmoid": "Sigmoid", "Tanh": "Tanh",
               "ELU": "Elu", "GELU": "Gelu", "SiLU": None, "ReLU6": None}
SKIPPED = ("Identity", "Dropout", "Dropout1d")


class SpconvImportError(BadInputError):
    """A module tree the converter cannot take (a layer kind, a custom forward, ...)."""


@dataclass
class Layer:
    """One layer of the tree, in application order: ``kind`` is subm / conv / inverse /
    batchnorm / an ONNX activation op type."""

    kind: str
    name: str
    attrs: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)     # name -> numpy array


# ---------------------------------------------------------------- stage 1 (torch + spconv)

def describe(module) -> list[Layer]:
    """The layers of a spconv module tree, in the order its containers apply them."""
    layers: list[Layer] = []
    _walk(module, "", layers)
    return layers


def _walk(module, prefix: str, layers: list[Layer]) -> None:
    cls = type(module).__name__
    if cls in ("SparseSequential", "Sequential"):
        for name, child in module.named_children():
            _walk(child, f"{prefix}{name}" if not prefix else f"{prefix}.{name}", layers)
        return
    layers.append(_layer(module, prefix or cls))


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _layer(module, name: str) -> Layer:
    cls = type(module).__name__
    if hasattr(module, "subm") and hasattr(module, "indice_key") and hasattr(module, "weight"):
        if getattr(module, "groups", 1) != 1 or getattr(module, "transposed", False):
            raise SpconvImportError(f"{name} ({cls}): grouped and transposed spconv convs are not "
                                    "supported (SparseInverseConv is)")
        if any(p != 0 for p in getattr(module, "output_padding", [0])):
            raise SpconvImportError(f"{name} ({cls}): output_padding is not supported")
        kind = "inverse" if module.inverse else "subm" if module.subm else "conv"
        from spconv.pytorch import conv as spconv_conv
        attrs = {"kernel": list(module.kernel_size), "stride": list(module.stride),
                 "padding": list(module.padding), "dilation": list(module.dilation),
                 "indice_key": module.indice_key, "ndim": int(module.ndim),
                 "mm_layout": "in_out" if getattr(module, "conv1x1", False)
                 and not getattr(spconv_conv, "FILTER_HWIO", False) else "krsc"}
        weights = {"weight": _numpy(module.weight)}
        if module.bias is not None:
            weights["bias"] = _numpy(module.bias)
        return Layer(kind, name, attrs, weights)
    if cls in ("BatchNorm1d",):
        if module.training:
            raise SpconvImportError(f"{name}: BatchNorm1d in training mode; call .eval() first")
        weights = {"scale": _numpy(module.weight) if module.weight is not None else
                   np.ones(module.num_features, np.float32),
                   "bias": _numpy(module.bias) if module.bias is not None else
                   np.zeros(module.num_features, np.float32),
                   "mean": _numpy(module.running_mean), "var": _numpy(module.running_var)}
        return Layer("batchnorm", name, {"eps": float(module.eps)}, weights)
    if cls in ACTIVATIONS and ACTIVATIONS[cls] is not None:
        attrs = {"alpha": float(module.negative_slope)} if cls == "LeakyReLU" else {}
        if cls == "ELU":
            attrs = {"alpha": float(module.alpha)}
        return Layer(ACTIVATIONS[cls], name, attrs)
    if cls in SKIPPED:
        return Layer("skip", name)
    raise SpconvImportError(f"{name} ({cls}): not a layer the converter knows (SubMConv, "
                            "SparseConv, SparseInverseConv, BatchNorm1d, ReLU, LeakyReLU, "
                            "Sigmoid, Tanh, ELU, GELU, Identity, Dropout inside SparseSequential "
                            "/ nn.Sequential)")


def save_layers(layers: list[Layer], path, **extra: np.ndarray) -> None:
    """Layers (and ``extra`` arrays) into one .npz: a JSON spec plus one array per weight."""
    spec = [{"kind": layer.kind, "name": layer.name, "attrs": layer.attrs,
             "weights": sorted(layer.weights)} for layer in layers]
    arrays = {f"layer{i}.{k}": v for i, layer in enumerate(layers) for k, v in layer.weights.items()}
    np.savez_compressed(path, spec=np.array(json.dumps(spec)), **arrays, **extra)


def load_layers(path) -> tuple[list[Layer], dict[str, np.ndarray]]:
    """(layers, the other arrays) of an .npz written by ``save_layers``."""
    data = np.load(Path(path))
    spec = json.loads(str(data["spec"]))
    layers = [Layer(s["kind"], s["name"], s["attrs"],
                    {k: data[f"layer{i}.{k}"] for k in s["weights"]}) for i, s in enumerate(spec)]
    used = {"spec"} | {f"layer{i}.{k}" for i, s in enumerate(spec) for k in s["weights"]}
    return layers, {k: data[k] for k in data.files if k not in used}


# ---------------------------------------------------------------- stage 2 (numpy + onnx)

@dataclass
class _Tensor:
    features: str
    coords: str
    grid: tuple[int, ...]
    channels: int


def to_onnx(layers: list[Layer], spatial_shape, in_channels: int, *,
            coords: np.ndarray | None = None, name: str = "spconv_model",
            dtype=np.float32) -> onnx.ModelProto:
    """The model: inputs ``features`` [N, in_channels] and ``coordinates`` [N, 1 + D] int32
    (spconv's ``indices``: batch, then the grid's dims), or constant coordinates when ``coords``
    is given; outputs ``out_features`` and ``out_coordinates`` of the last layer."""
    grid = tuple(int(s) for s in spatial_shape)
    rank = len(grid)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes, inits, inputs = [], [], [helper.make_tensor_value_info("features", elem,
                                                                  ["N", in_channels])]
    if coords is None:
        inputs.append(helper.make_tensor_value_info("coordinates", onnx.TensorProto.INT32,
                                                    ["N", 1 + rank]))
    else:
        inits.append(numpy_helper.from_array(np.asarray(coords, np.int32), "coordinates"))
    x = _Tensor("features", "coordinates", grid, in_channels)
    keyed: dict[str, tuple[_Tensor, SparseConvAttrs]] = {}     # indice_key -> conv input, attrs

    def init(label: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), label))
        return label

    for i, layer in enumerate(layers):
        label = layer.name.replace(".", "/") or f"layer{i}"
        if layer.kind == "skip":
            continue
        if layer.kind in CONV_KINDS:
            x = _conv(layer, label, x, keyed, nodes, init, rank, dtype)
            continue
        if layer.kind == "batchnorm":
            w = layer.weights
            if len(w["scale"]) != x.channels:
                raise SpconvImportError(f"{layer.name}: BatchNorm1d of {len(w['scale'])} "
                                        f"features after {x.channels} channels")
            ins = [x.features] + [init(f"{label}.{k}", w[k].astype(dtype))
                                  for k in ("scale", "bias", "mean", "var")]
            nodes.append(helper.make_node("BatchNormalization", ins, [f"{label}.out"], name=label,
                                          epsilon=layer.attrs.get("eps", 1e-5)))
        else:
            nodes.append(helper.make_node(layer.kind, [x.features], [f"{label}.out"], name=label,
                                          **layer.attrs))
        x = _Tensor(f"{label}.out", x.coords, x.grid, x.channels)
    outputs = []
    for out, src, elem_type, cols in (("out_features", x.features, elem, x.channels),
                                      ("out_coordinates", x.coords, onnx.TensorProto.INT32,
                                       1 + rank)):
        nodes.append(helper.make_node("Identity", [src], [out], name=f"{out}/identity"))
        outputs.append(helper.make_tensor_value_info(out, elem_type, ["M", cols]))
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, producer_name="convrewrite.sparse.spconv_import",
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _conv(layer: Layer, label: str, x: _Tensor, keyed: dict, nodes: list, init, rank: int,
          dtype) -> _Tensor:
    a = layer.attrs
    if a.get("ndim", rank) != rank:
        raise SpconvImportError(f"{layer.name}: a {a['ndim']}-D conv on a {rank}-D grid")
    weight = _onnx_weight(layer).astype(dtype)
    cout, cin = weight.shape[:2]
    if cin != x.channels:
        raise SpconvImportError(f"{layer.name}: {cin} input channels after {x.channels}")
    ins_tail = [init(f"{label}.W", weight)]
    if "bias" in layer.weights:
        ins_tail.append(init(f"{label}.B", layer.weights["bias"].astype(dtype)))
    key = a.get("indice_key")
    if layer.kind == "inverse":
        if key not in keyed:
            raise SpconvImportError(f"{layer.name}: SparseInverseConv indice_key {key!r} names no "
                                    "earlier SparseConv")
        fine, forward = keyed[key]
        if list(forward.kernel_shape) != list(a["kernel"]):
            raise SpconvImportError(f"{layer.name}: kernel {a['kernel']} differs from its "
                                    f"SparseConv's {list(forward.kernel_shape)}")
        if tuple(forward.out_spatial_shape) != x.grid:
            raise SpconvImportError(f"{layer.name}: its input grid {list(x.grid)} is not the grid "
                                    f"{list(forward.out_spatial_shape)} of {key!r}'s output")
        out = f"{label}.features"
        nodes.append(helper.make_node(INVERSE_OP_TYPE, [x.features, x.coords, fine.coords,
                                                        *ins_tail], [out], name=label,
                                      domain=DOMAIN, **forward.to_node_attrs(INVERSE_OP_TYPE)))
        return _Tensor(out, fine.coords, fine.grid, cout)
    sub = layer.kind == "subm"
    pads = None if sub else [int(p) for p in a["padding"]] * 2
    attrs = SparseConvAttrs.create(a["kernel"], x.grid, None if sub else a["stride"], pads,
                                   a["dilation"], sub)
    outs = [f"{label}.features", f"{label}.coords"]
    nodes.append(helper.make_node(OP_TYPE, [x.features, x.coords, *ins_tail], outs, name=label,
                                  domain=DOMAIN, **attrs.to_node_attrs()))
    if not sub and key is not None:
        keyed[key] = (x, attrs)
    y = _Tensor(outs[0], x.coords if sub else outs[1], attrs.out_spatial_shape, cout)
    return y


def _onnx_weight(layer: Layer) -> np.ndarray:
    """[Cout, Cin, k...] from spconv's [Cout, k..., Cin]. spconv 2.x runs a 1x1 conv (kernel
    volume 1, stride 1) as ``features @ weight.view(Cin, Cout)`` -- the same memory read as
    [Cin, Cout], not as [Cout, Cin] (its ``FILTER_HWIO`` is False) -- and trained weights follow
    that reading, so it is reproduced here (``mm_layout`` "in_out")."""
    w = np.asarray(layer.weights["weight"])
    if layer.attrs.get("mm_layout") == "in_out":
        cout, cin = w.shape[0], w.shape[-1]
        matrix = w.reshape(cin, cout).T
        return np.ascontiguousarray(matrix.reshape(cout, cin, *w.shape[1:-1]))
    return onnx_weight_from_spconv(w)


def from_spconv(module, spatial_shape, in_channels: int, **kwargs) -> onnx.ModelProto:
    """``to_onnx(describe(module), ...)``: a spconv module tree as an ONNX model of our ops."""
    return to_onnx(describe(module), spatial_shape, in_channels, **kwargs)


# ---------------------------------------------------------------- checking against spconv

def spconv_forward(module, features: np.ndarray, coords: np.ndarray, spatial_shape,
                   batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """spconv's own forward (no grad, its CPU kernels): (features, indices). Run it with one
    OpenMP thread: spconv's CPU scatter-add races on more."""
    import spconv.pytorch as sp
    import torch
    batch = int(coords[:, 0].max()) + 1 if batch_size is None else batch_size
    x = sp.SparseConvTensor(torch.from_numpy(np.ascontiguousarray(features)),
                            torch.from_numpy(np.ascontiguousarray(coords, np.int32)),
                            list(spatial_shape), batch)
    with torch.no_grad():
        y = module(x)
    return y.features.numpy(), y.indices.numpy()


def keyed_difference(ours_coords, ours_features, ref_coords, ref_features) -> float:
    """Max |difference| matching rows by coordinate (spconv orders regular outputs otherwise);
    a SpconvImportError when the site sets differ."""
    a, b = np.lexsort(np.asarray(ours_coords).T[::-1]), np.lexsort(np.asarray(ref_coords).T[::-1])
    if len(a) != len(b) or not np.array_equal(np.asarray(ours_coords)[a],
                                              np.asarray(ref_coords)[b]):
        raise SpconvImportError(f"the output sites differ from spconv's ({len(a)} vs {len(b)})")
    if not len(a):
        return 0.0
    return float(np.abs(np.asarray(ours_features)[a] - np.asarray(ref_features)[b]).max())
