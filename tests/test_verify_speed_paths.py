"""Regression guards for the verification speed paths (review of 2026-12-03): sessions whose large
weights go to onnxruntime beside the protobuf (``verify._weights_apart``), the graph built inside
the model (``gs_graph._export_onnx``) and the bit-exact check by bytes first
(``verify._bit_exact``), each on the unusual models that could break it: weights shared, read in
If/Loop bodies or a local function, initializers that are graph inputs or outputs or unread,
fp16/bf16 weights."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from convrewrite.gs_graph import _export_onnx, to_graph
from convrewrite import ort_weights

verify = importlib.import_module("convrewrite.verify")   # the package exports a function of it

X = h.make_tensor_value_info("x", T.FLOAT, [1, 2, 4, 4])
Y = h.make_tensor_value_info("y", T.FLOAT, None)
PADS = [1, 1, 1, 1]


def _w(name, shape, dtype=np.float32, seed=0):
    return nh.from_array(np.random.default_rng(seed).standard_normal(shape).astype(dtype), name)


def _model(nodes, inits, inputs=(X,), outputs=(Y,), ir=8, opset=17):
    g = h.make_graph(nodes, "g", list(inputs), list(outputs), initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def _out(name):
    return h.make_tensor_value_info(name, T.FLOAT, None)


def _models() -> dict[str, onnx.ModelProto]:
    w, c = _w("w", [3, 2, 3, 3]), nh.from_array(np.array(True), "c")
    conv = lambda out, x="x": h.make_node("Conv", [x, "w"], [out], pads=PADS)   # noqa: E731
    then = h.make_graph([conv("t")], "then", [], [_out("t")])
    other = h.make_graph([h.make_node("Identity", ["a"], ["e"])], "else", [], [_out("e")])
    models = {
        "shared": _model([conv("a"), conv("b"), h.make_node("Add", ["a", "b"], ["y"])], [w]),
        "main_and_if_body": _model([conv("a"), h.make_node("If", ["c"], ["y"], then_branch=then,
                                                           else_branch=other)], [w, c]),
        "if_body_only": _model([h.make_node("If", ["c"], ["y"], then_branch=then,
                                            else_branch=h.make_graph([conv("e")], "e", [],
                                                                     [_out("e")]))], [w, c]),
        "ir3_initializer_is_input": _model(
            [conv("y")], [w], inputs=(X, h.make_tensor_value_info("w", T.FLOAT, [3, 2, 3, 3])),
            ir=3, opset=9),
        "ir8_initializer_is_input": _model(
            [conv("y")], [w], inputs=(X, h.make_tensor_value_info("w", T.FLOAT, [3, 2, 3, 3]))),
        "initializer_is_output": _model([conv("y")], [w], outputs=(Y, _out("w"))),
        "unread_initializer": _model([conv("y")], [w, _w("unread", [100], seed=1)]),
        "fp16": _model([h.make_node("Cast", ["x"], ["xh"], to=T.FLOAT16), conv("yh", "xh"),
                        h.make_node("Cast", ["yh"], ["y"], to=T.FLOAT)],
                       [_w("w", [3, 2, 3, 3], np.float16)]),
        "bf16": _model([h.make_node("Cast", ["b"], ["w"], to=T.FLOAT), conv("y")], [
            h.make_tensor("b", T.BFLOAT16, [3, 2, 3, 3],
                          (np.arange(54, dtype=np.uint16) + 0x3F00).tobytes(), raw=True)]),
        "int8_dequantized": _model(
            [h.make_node("DequantizeLinear", ["q", "s"], ["w"]), conv("y")],
            [nh.from_array(np.arange(-27, 27, dtype=np.int8).reshape(3, 2, 3, 3), "q"),
             nh.from_array(np.array(0.1, np.float32), "s")]),
    }
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("Conv", ["v_in", "w"], ["v_out"], pads=PADS)], "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         _out("v_in")], [h.make_tensor_value_info("cond_out", T.BOOL, []), _out("v_out")])
    models["main_and_loop_body"] = _model(
        [h.make_node("Conv", ["x", "w"], ["a"], pads=PADS),
         h.make_node("Loop", ["n", "c", "a"], ["y"], body=body)],
        [_w("w", [2, 2, 3, 3]), c, nh.from_array(np.array(2, np.int64), "n")])
    local = _model([h.make_node("F", ["x", "w"], ["y"], domain="local")], [w])
    local.opset_import.append(h.make_opsetid("local", 1))
    local.functions.append(h.make_function("local", "F", ["a", "b"], ["c"], [
        h.make_node("Conv", ["a", "b"], ["c"], pads=PADS)], [h.make_opsetid("", 17)]))
    models["local_function"] = local
    return models


MODELS = _models()
FEEDS = {"x": np.random.default_rng(2).standard_normal([1, 2, 4, 4]).astype(np.float32)}


def _plain(model, level, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = verify.ORT_LEVELS[level]
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("level", ["disable", "all"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_weights_beside_the_protobuf_compute_what_the_protobuf_does(name, level, monkeypatch):
    """Every weight a main-graph node reads goes beside the protobuf (APART_BYTES 0); the session
    computes the same bits as one from the whole protobuf, and an unread initializer (which
    onnxruntime drops, then refuses to replace) or one read only in a body stays inside."""
    monkeypatch.setattr(ort_weights, "APART_BYTES", 0)
    model = MODELS[name]
    _, names, _ = verify._weights_apart(model)
    read = {i for n in model.graph.node for i in n.input}
    assert set(names) == {t.name for t in model.graph.initializer if t.name in read
                          and t.data_type in ort_weights.APART_TYPES}
    assert "unread" not in names and (name != "if_body_only" or not names)
    feeds = dict(FEEDS)
    if name == "ir8_initializer_is_input":       # a fed value replaces the initializer
        feeds["w"] = np.full([3, 2, 3, 3], 0.5, np.float32)
    for f in ({**FEEDS}, feeds):
        want = _plain(model, level, f)
        got = verify.session(model, level).run(None, f)
        assert len(got) == len(want)
        assert all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in zip(want, got))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_model_apart_computes_what_its_protobuf_does(name, monkeypatch):
    """Read out once (``local_checks.apart``, APART_BYTES 0: every read weight but int8), a
    model runs from its stand-ins and arrays as from the whole protobuf, at every level and on
    onnx's reference evaluator (``Apart.whole``: the very protobuf again)."""
    monkeypatch.setattr(ort_weights, "APART_BYTES", 0)
    model = MODELS[name]
    made = verify.local_checks.apart(model)
    assert all(ort_weights.is_stand_in(t) == (t.name in made.arrays)
               for t in made.model.graph.initializer)
    assert not any(t.data_type == T.INT8 for t in made.model.graph.initializer
                   if t.name in made.arrays)
    assert made.whole().SerializeToString() == model.SerializeToString()
    for level in ("disable", "all"):
        want = _plain(model, level, FEEDS)
        got = verify.session(made, level).run(None, FEEDS)
        assert all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in zip(want, got))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_inside_the_model_matches_graphsurgeon(name):
    """``_export_onnx`` gives gs.export_onnx's bytes (do_type_check=False), doc strings,
    value_info, functions and bodies included."""
    model = onnx.ModelProto()
    model.CopyFrom(MODELS[name])
    model.doc_string, model.graph.doc_string = "model doc", "graph doc"
    model.producer_name, model.producer_version = "probe", "9"
    model.metadata_props.add(key="k", value="v")
    model.graph.node[0].doc_string = "node doc"
    opsets = list(model.opset_import)
    for make in (gs.import_onnx, to_graph):
        want = gs.export_onnx(make(model), do_type_check=False, opset_imports=opsets)
        got = _export_onnx(make(model), opsets)
        assert got.SerializeToString(deterministic=True) == \
            want.SerializeToString(deterministic=True)


def test_bit_exact_by_bytes_decides_as_value_by_value():
    """-0 equals 0, NaN equals NaN whatever its payload, shapes and dtypes must match: the bytes
    shortcut changes no verdict of numpy's array_equal(equal_nan)."""
    other_nan = np.frombuffer(np.array([0x7FC00001], np.uint32).tobytes(), np.float32)
    values = [np.array([0.0], np.float32), np.array([-0.0], np.float32),
              np.array([np.nan], np.float32), other_nan, np.array([-np.nan], np.float32),
              np.array([1.0], np.float32), np.array([0.0], np.float64),
              np.array([[0.0]], np.float32), np.array(0.0, np.float32),
              np.zeros((0,), np.float32), np.zeros((0, 2), np.float32),
              np.array([0], np.int32), np.array([0.0, -0.0], np.float16),
              np.array([complex(np.nan, 0)], np.complex64),
              np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2],
              np.ascontiguousarray(np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2]),
              np.asfortranarray(np.array([[0.0, 2.0], [3.0, 5.0]], np.float32)),
              np.array([[0.0, 2.0], [3.0, 5.0]], np.float32),
              np.array([complex(1, -0.0)], np.complex128), np.array([complex(1, 0)], np.complex128),
              np.array([True, False]), np.array([True, True]), np.array([1, -1], np.int8),
              np.array([0.0, 2.0], np.float32)]
    for a, b in itertools.product(values, values):
        want = a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        assert verify._bit_exact(a, b) == want, (a, b)
    assert verify._bit_exact(np.array([-0.0], np.float32), np.array([0.0], np.float32))
    assert verify._bit_exact(other_nan, np.array([np.nan], np.float32))


def _plain_differences(ref, got, atol, rtol, noise):
    """verify._differences as the plain formulas (a fresh array per step): the oracle."""
    ref, got = np.asarray(ref), np.asarray(got)
    r, g = ref.astype(np.float64), got.astype(np.float64)
    same = (r == g) | (np.isnan(r) & np.isnan(g))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same, 0.0, np.abs(g - r))
    diff = np.where(np.isnan(diff), np.inf, diff)
    mag = np.abs(np.where(np.isfinite(r), r, 0.0))
    rel = diff / np.maximum(mag, np.finfo(np.float64).tiny)
    out = [int((diff > atol + rtol * mag + noise).sum()), float(diff.max()),
           float(np.where(diff == 0, 0.0, rel).max()),
           float(np.percentile(np.minimum(diff, np.finfo(np.float64).max), 99)),
           tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)),
           float(np.maximum(diff - rtol * mag - noise, 0.0).max())]
    return out


def test_differences_in_place_as_the_plain_formulas():
    """The buffers reused in place give every statistic of the plain formulas, bit for bit, on
    arrays with NaN, infinities, signed zeros, equal elements, mixed dtypes, 0-d to 4-d."""
    verify = importlib.import_module("convrewrite.verify")
    rng = np.random.default_rng(3)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3e38])
    for shape, dtype, other in itertools.product(
            [(), (7,), (3, 50), (2, 4, 33), (1, 3, 5, 9)],
            [np.float32, np.float16, np.float64], [None, np.float64]):
        ref = np.asarray(rng.standard_normal(shape), dtype=dtype)
        got = np.asarray(ref + rng.standard_normal(shape) * 1e-3, dtype=other or dtype)
        if ref.size > 4:
            flat_r, flat_g = ref.reshape(-1), got.reshape(-1)
            k = rng.choice(ref.size, size=min(ref.size // 2, 14), replace=False)
            with np.errstate(over="ignore"):                # 3e38 is inf in float16
                flat_r[k] = rng.choice(specials, size=len(k)).astype(dtype)
                flat_g[k[::2]] = flat_r[k[::2]]              # some equal, NaN on both sides
                flat_g[k[1::2]] = rng.choice(specials, size=len(k[1::2]))
        for atol, rtol, noise in [(1e-5, 1e-4, 0.0), (0.0, 0.0, 0.0), (1e-3, 0.0, 2e-4)]:
            before_r, before_g = ref.copy(), got.copy()
            found = verify._differences(ref, got, atol, rtol, noise)
            want = _plain_differences(ref, got, atol, rtol, noise)
            got_stats = [found.mismatches, found.max_abs, found.max_rel, found.p99_abs,
                         tuple(int(i) for i in found.worst), found.min_atol_to_pass]
            assert repr(got_stats) == repr(want), (shape, dtype, other, atol, rtol, noise)
            assert ref.tobytes() == before_r.tobytes() and got.tobytes() == before_g.tobytes()
