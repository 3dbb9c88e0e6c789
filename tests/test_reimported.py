"""gs_graph.reimported: the graph with shapes inferred afresh, as ``to_graph(from_graph(g,
like))`` gives it, without copying the large weights (they go out as the stand-ins shape
inference sees anyway and come back as the values they were)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from convrewrite import gs_graph
from convrewrite.graph import large_tensor
from convrewrite.gs_graph import _Deferred, from_graph, reimported, to_graph
from convrewrite.models import conv1d_net, demo_wide, resnet18, shufflenet_v2
from convrewrite.passes import LowerConvs, DEFAULT_PASSES, RewriteContext
from convrewrite.graph import opset_version
from convrewrite.naming import Names
from convrewrite.target import load_target

C64 = {"name": "c64", "conv": {"max_in_channels": 64, "max_out_channels": 64}}


def _describe(graph: gs.Graph) -> list:
    """Everything a pass can read of a graph: per node its op, name, domain, attributes (types
    included) and tensors; per tensor its class, dtype, shape (and its type), data location
    and values."""
    out = []
    for node in graph.nodes:
        attrs = [(k, type(v).__name__, repr(v) if not isinstance(v, gs.Tensor) else v.name)
                 for k, v in node.attrs.items()]
        out.append((node.op, node.name, node.domain, attrs,
                    [t.name for t in node.inputs], [t.name for t in node.outputs]))
    for name, t in graph.tensors().items():
        row = [name, type(t).__name__, repr(t.dtype), repr(t.shape), type(t.shape).__name__]
        if isinstance(t, gs.Constant):
            values = t._values
            lazy = isinstance(values, gs_graph.LazyValues)
            row += [t.data_location, lazy, repr(values.dtype), list(values.shape)]
            array = t.values
            row += [array.dtype.str, array.shape, array.tobytes(), array.flags.c_contiguous]
        else:
            row += [t.type]
        out.append(tuple(row))
    out.append(([t.name for t in graph.inputs], [t.name for t in graph.outputs], graph.name,
                graph.opset, graph.producer_name))
    return out


def _lowered(model: onnx.ModelProto, target) -> gs.Graph:
    """A graph as the conv fixpoint leaves it after one round: new numpy weights (slices), the
    originals' LazyValues, tensors without shapes."""
    graph = to_graph(model)
    ctx = RewriteContext(graph=graph, target=load_target(target), opset=opset_version(model),
                         names=Names.in_graph(graph))
    fixpoint = LowerConvs(DEFAULT_PASSES)
    import convrewrite.passes.lower_conv as lc
    original, lc.MAX_ITERATIONS = lc.MAX_ITERATIONS, 1
    try:
        fixpoint.run(ctx, model)
    finally:
        lc.MAX_ITERATIONS = original
    return ctx.graph


CASES = [(resnet18, C64), (demo_wide, C64), (shufflenet_v2, "k210"), (conv1d_net, "k210")]


@pytest.mark.parametrize("build,target", CASES, ids=[c[0].__name__ for c in CASES])
def test_same_graph_as_the_round_trip(build, target, monkeypatch):
    model = build()
    a, b = _lowered(model, target), _lowered(model, target)
    full = to_graph(from_graph(a, model))
    exported = []
    export = gs_graph.OnnxExporter.export_tensor_proto
    monkeypatch.setattr(gs_graph.OnnxExporter, "export_tensor_proto",
                        staticmethod(lambda t: exported.append(t.name) or export(t)))
    light = reimported(b, model)
    monkeypatch.undo()
    large = {t.name for t in onnx.ModelProto.FromString(
        from_graph(full, model).SerializeToString()).graph.initializer if large_tensor(t)}
    assert not set(exported) & large           # no large weight was exported on the way
    assert _describe(light) == _describe(full)
    # and both export the same bytes, now and after another round trip of each
    assert from_graph(light, model).SerializeToString() == \
        from_graph(full, model).SerializeToString()
    again = reimported(light, model)
    assert from_graph(again, model).SerializeToString() == \
        from_graph(to_graph(from_graph(full, model)), model).SerializeToString()


def test_large_weights_do_not_travel():
    """ResNet-18 at c64 holds 40 MB of weights: the model shape inference and the import see
    stays small (every large weight a stand-in), and each numpy weight comes back as a
    ``_Deferred`` whose tensor is made only when something asks."""
    model = resnet18()
    graph = _lowered(model, C64)
    seen = []
    original = gs_graph.to_graph
    gs_graph.to_graph = lambda m: seen.append(m.ByteSize()) or original(m)
    try:
        out = reimported(graph, model)
    finally:
        gs_graph.to_graph = original
    assert seen and seen[0] < 2_000_000 < model.ByteSize()
    deferred = [t for t in out.tensors().values() if isinstance(t, gs.Constant)
                and isinstance(t._values, _Deferred)]
    assert deferred and all(d._values._tensor is None for d in deferred)


def test_deferred_reads_as_the_exported_tensor():
    """``_Deferred`` loads what LazyValues of the exported tensor loads, for each plain dtype
    and a non-contiguous array."""
    rng = np.random.default_rng(0)
    for dtype in sorted(gs_graph._PLAIN, key=str):
        array = (rng.standard_normal((40, 30, 3)) * 50).astype(dtype)[:, ::2]
        c = gs.Constant("w", array)
        exported = gs_graph.OnnxExporter.export_tensor_proto(c)
        lazy = gs_graph.LazyValues(exported)
        deferred = _Deferred(lazy, "w", array, None)
        got, want = deferred.load(), lazy.load()
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes() and got.flags.c_contiguous
        assert deferred.tensor.SerializeToString() == exported.SerializeToString()


def _variables(graph: gs.Graph) -> list:
    """What shape inference gives a graph: per named Variable its dtype, shape and type; and
    the nodes in order with their tensors."""
    tensors = [(name, repr(t.dtype), repr(t.shape), t.type) for name, t in
               graph.tensors().items() if isinstance(t, gs.Variable)]
    return tensors + [(n.op, n.name, [t.name for t in n.inputs], [t.name for t in n.outputs])
                      for n in graph.nodes]


@pytest.mark.parametrize("build,target", CASES, ids=[c[0].__name__ for c in CASES])
def test_reinferred_in_place_as_the_round_trip(build, target):
    """gs_graph.reinferred gives the graph itself the shapes, dtypes and node order the round
    trip gives a new graph, and exports the same bytes, now and after another round of each."""
    model = build()
    a, b = _lowered(model, target), _lowered(model, target)
    full = reimported(a, model)
    same = gs_graph.reinferred(b, model)
    assert same is b
    assert _variables(same) == _variables(full)
    assert from_graph(same, model).SerializeToString() == \
        from_graph(full, model).SerializeToString()
    assert from_graph(gs_graph.reinferred(same, model), model).SerializeToString() == \
        from_graph(reimported(full, model), model).SerializeToString()


def test_reinferred_forgets_a_shape_inference_does_not_give():
    """A shape set by hand that inference does not confirm goes, as in a fresh import (the
    next round's legality checks read inferred shapes only)."""
    model = demo_wide()
    graph = to_graph(model)
    inner = next(t for t in graph.tensors().values()
                 if isinstance(t, gs.Variable) and t not in graph.inputs + graph.outputs)
    want = (inner.dtype, list(inner.shape))
    inner.shape, inner.dtype = [7, 7], None
    gs_graph.reinferred(graph, model)
    assert (inner.dtype, list(inner.shape)) == want


def test_reinferred_reimports_two_tensors_of_one_name():
    """Two tensor objects of one name are one tensor once imported (their readers read one
    tensor): such a graph is imported afresh, not patched."""
    model = demo_wide()
    graph = to_graph(model)
    relu = next(n for n in graph.nodes if n.op == "Relu")
    twin = gs.Variable(relu.outputs[0].name)                 # no producer, no shape
    extra = gs.Variable("extra")
    graph.nodes.append(gs.Node("Neg", "reads_the_twin", inputs=[twin], outputs=[extra]))
    graph.outputs.append(extra)
    out = gs_graph.reinferred(graph, model)
    assert out is not graph
    assert _variables(out) == _variables(to_graph(from_graph(graph, model)))
    readers = [n for n in out.nodes if any(t.name == twin.name for t in n.inputs)]
    assert len(readers) == 2 and readers[0].inputs[0] is readers[1].inputs[0]
