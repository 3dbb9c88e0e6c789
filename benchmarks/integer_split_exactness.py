"""How exact are channel splits of integer convs on onnxruntime (issue 14 item 7)?

For random QLinearConv layers (uint8 / int8 activations, per-tensor and per-channel weight scales,
with and without bias) this builds, by hand, the forms a split could take and runs them next to the
original on onnxruntime CPU (basic and all optimisation levels), printing the largest difference
in quantization steps (LSBs):

* ``out``: output-channel chunks, each a QLinearConv with its rows of w, w_scale, w_zp, bias,
  joined by Concat;
* ``in``: input-channel chunks as ConvInteger (int32), summed, bias added, then requantized once:
  Cast to float, Mul by x_scale * w_scale / y_scale (float32, in that order, as onnxruntime's
  kernel computes it), QuantizeLinear(scale 1, y_zp) (round half to even, saturate); where the
  per-channel weight zero points differ, each chunk is ConvInteger with zero point 0 less
  w_zp[c] times a one-channel ConvInteger of ones;
* ConvInteger models: input chunks summed in int32, output chunks concatenated.

Run: ``python benchmarks/integer_split_exactness.py [trials]``.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ONNX_TYPE = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


def _session(model: onnx.ModelProto, level) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(nodes, inits, x_type, cin, y_type, cout, hw=6):
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", x_type,
                                                                         [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", y_type, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


def layer(rng, xdt, wdt, per_channel, bias, cin=12, cout=10):
    info_w = np.iinfo(wdt)
    p = {
        "xs": np.float32(rng.uniform(0.005, 0.05)),
        "xz": np.array(rng.integers(0, 255) if xdt is np.uint8 else rng.integers(-128, 127), xdt),
        "w": rng.integers(info_w.min, info_w.max, (cout, cin, 3, 3), endpoint=True).astype(wdt),
        "ys": np.float32(rng.uniform(0.02, 0.3)),
        "yz": np.array(rng.integers(0, 255) if xdt is np.uint8 else rng.integers(-128, 127), xdt),
    }
    n = cout if per_channel else 1
    shape = (cout,) if per_channel else ()
    p["ws"] = rng.uniform(0.001, 0.02, n).astype(np.float32).reshape(shape)
    # per-channel weights are usually symmetric (one zero point for all channels); "varying"
    # gives each channel its own zero point
    zps = rng.integers(-5, 5, n) if per_channel != "uniform" else np.zeros(n, np.int64)
    p["wz"] = (zps + (128 if wdt is np.uint8 else 0)).astype(wdt).reshape(shape)
    if bias:
        p["B"] = rng.integers(-3000, 3000, cout).astype(np.int32)
    return p


def qlinear(p, cin, cout):
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"] + (["B"] if "B" in p else [])
    node = helper.make_node("QLinearConv", names, ["y"], pads=[1, 1, 1, 1])
    x_type = ONNX_TYPE[p["xz"].dtype.type]
    return _model([node], p, x_type, cin, x_type, cout)


def out_split(p, cin, cout, chunks):
    nodes, inits, outs = [], dict(xs=p["xs"], xz=p["xz"], ys=p["ys"], yz=p["yz"]), []
    for k, (a, b) in enumerate(chunks):
        names = ["x", "xs", "xz"]
        for key in ("w", "ws", "wz"):
            v = p[key]
            inits[f"{key}{k}"] = v[a:b] if v.ndim else v
            names.append(f"{key}{k}")
        names += ["ys", "yz"]
        if "B" in p:
            inits[f"B{k}"] = p["B"][a:b]
            names.append(f"B{k}")
        nodes.append(helper.make_node("QLinearConv", names, [f"y{k}"], pads=[1, 1, 1, 1]))
        outs.append(f"y{k}")
    nodes.append(helper.make_node("Concat", outs, ["y"], axis=1))
    x_type = ONNX_TYPE[p["xz"].dtype.type]
    return _model(nodes, inits, x_type, cin, x_type, cout)


def in_split(p, cin, cout, chunks):
    x_type = ONNX_TYPE[p["xz"].dtype.type]
    inits = dict(xz=p["xz"], wz=p["wz"], yz=p["yz"],
                 sizes=np.array([b - a for a, b in chunks], np.int64), one=np.float32(1.0))
    # onnxruntime's QLinearConv: output_scale[i] = x_scale * w_scale[i] / y_scale, in float32.
    inits["m"] = (p["xs"] * p["ws"] / p["ys"]).astype(np.float32)
    if inits["m"].ndim:
        inits["m"] = inits["m"].reshape(-1, 1, 1)
    parts = [f"x{k}" for k in range(len(chunks))]
    nodes = [helper.make_node("Split", ["x", "sizes"], parts, axis=1)]
    centre = p["wz"].ndim and len(set(p["wz"].tolist())) > 1
    if p["wz"].ndim and not centre:
        inits["wz"] = p["wz"][:1].reshape(())   # one zero point: the scalar ConvInteger takes
    if centre:      # per-channel zero points: zero point 0, less w_zp[c] * the window's input sum
        inits["wz"] = np.array(0, p["wz"].dtype)
        inits["wzc"] = p["wz"].astype(np.int32).reshape(-1, 1, 1)
    sums = []
    for k, (a, b) in enumerate(chunks):
        inits[f"w{k}"] = p["w"][:, a:b]
        nodes.append(helper.make_node("ConvInteger", [f"x{k}", f"w{k}", "xz", "wz"], [f"acc{k}"],
                                      pads=[1, 1, 1, 1]))
        if centre:
            inits[f"ones{k}"] = np.ones((1, b - a, 3, 3), p["wz"].dtype)
            nodes += [helper.make_node("ConvInteger", [f"x{k}", f"ones{k}", "xz", "wz"],
                                       [f"win{k}"], pads=[1, 1, 1, 1]),
                      helper.make_node("Mul", [f"win{k}", "wzc"], [f"zpt{k}"]),
                      helper.make_node("Sub", [f"acc{k}", f"zpt{k}"], [f"cen{k}"])]
            sums.append(f"cen{k}")
            continue
        sums.append(f"acc{k}")
    acc = sums[0]
    for k in range(1, len(sums)):
        nodes.append(helper.make_node("Add", [acc, sums[k]], [f"sum{k}"]))
        acc = f"sum{k}"
    if "B" in p:
        inits["B"] = p["B"].reshape(-1, 1, 1)
        nodes.append(helper.make_node("Add", [acc, "B"], ["biased"]))
        acc = "biased"
    nodes += [helper.make_node("Cast", [acc], ["accf"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["accf", "m"], ["scaled"]),
              helper.make_node("QuantizeLinear", ["scaled", "one", "yz"], ["y"])]
    return _model(nodes, inits, x_type, cin, x_type, cout)


def conv_integer(p, cin, cout, chunks=None, axis=None):
    """ConvInteger (x, w, x_zp, w_zp): whole, or split on input (axis 1) or output (axis 0)."""
    inits = dict(xz=p["xz"], wz=p["wz"])
    x_type = ONNX_TYPE[p["xz"].dtype.type]
    if chunks is None:
        inits["w"] = p["w"]
        node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 1, 1, 1])
        return _model([node], inits, x_type, cin, TensorProto.INT32, cout)
    nodes, outs = [], []
    if axis == 1:
        inits["sizes"] = np.array([b - a for a, b in chunks], np.int64)
        nodes.append(helper.make_node("Split", ["x", "sizes"],
                                      [f"x{k}" for k in range(len(chunks))], axis=1))
    for k, (a, b) in enumerate(chunks):
        inits[f"w{k}"] = p["w"][:, a:b] if axis == 1 else p["w"][a:b]
        xin = f"x{k}" if axis == 1 else "x"
        wz = "wz"
        if axis == 0 and p["wz"].ndim:
            inits[f"wz{k}"] = p["wz"][a:b]
            wz = f"wz{k}"
        nodes.append(helper.make_node("ConvInteger", [xin, f"w{k}", "xz", wz], [f"y{k}"],
                                      pads=[1, 1, 1, 1]))
        outs.append(f"y{k}")
    if axis == 0:
        nodes.append(helper.make_node("Concat", outs, ["y"], axis=1))
    else:
        acc = outs[0]
        for k in range(1, len(outs)):
            name = "y" if k == len(outs) - 1 else f"s{k}"
            nodes.append(helper.make_node("Add", [acc, outs[k]], [name]))
            acc = name
    return _model(nodes, inits, x_type, cin, TensorProto.INT32, cout)


def lsb(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def main(trials: int = 20) -> None:
    run_shape(trials, 12, [(0, 5), (5, 9), (9, 12)])
    # wide: int32 sums past 2**24, where Cast to float rounds (as onnxruntime's kernel does)
    run_shape(max(1, trials // 5), 600, [(0, 256), (256, 512), (512, 600)])


LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def forms(p, cin, cout, in_chunks, out_chunks, bias):
    """(original, split) model pairs by form."""
    pairs = {"qlinear out": (qlinear(p, cin, cout), out_split(p, cin, cout, out_chunks)),
             "qlinear in": (qlinear(p, cin, cout), in_split(p, cin, cout, in_chunks))}
    if not bias:                    # ConvInteger has no bias
        whole = conv_integer(p, cin, cout)
        pairs["convinteger in"] = (whole, conv_integer(p, cin, cout, in_chunks, 1))
        pairs["convinteger out"] = (whole, conv_integer(p, cin, cout, out_chunks, 0))
    return pairs


def run_shape(trials: int, cin: int, in_chunks: list) -> None:
    rng = np.random.default_rng(cin)
    cout = 10
    out_chunks = [(0, 4), (4, 8), (8, 10)]
    print(f"--- {cin} input channels, 3x3, {cout} output channels")
    worst: dict[str, "int | str"] = {}
    differing: dict[str, int] = {}
    configs = [(xdt, wdt, pc, bias) for xdt in (np.uint8, np.int8) for wdt in (np.int8, np.uint8)
               for pc in (False, "uniform", "varying") for bias in (False, True)]
    for xdt, wdt, per_channel, bias in configs:
        scheme = f"per-channel/{per_channel}-zp" if per_channel else "per-tensor"
        for _ in range(trials):
            p = layer(rng, xdt, wdt, per_channel, bias, cin, cout)
            info = np.iinfo(xdt)
            x = rng.integers(info.min, info.max, (1, cin, 6, 6), endpoint=True).astype(xdt)
            for form, (orig, split) in forms(p, cin, cout, in_chunks, out_chunks, bias).items():
                for level_name, level in LEVELS.items():
                    key = f"{form} {xdt.__name__}/{wdt.__name__} {scheme}" \
                          f"{' bias' if bias else ''} [{level_name}]"
                    if isinstance(worst.get(key), str):
                        continue
                    try:
                        ref = _session(orig, level).run(None, {"x": x})[0]
                        got = _session(split, level).run(None, {"x": x})[0]
                    except Exception as exc:   # noqa: BLE001 - onnxruntime lacks the kernel
                        worst[key] = f"unsupported: {str(exc).splitlines()[0][:70]}"
                        continue
                    worst[key] = max(worst.get(key, 0), lsb(ref, got))
                    differing[key] = differing.get(key, 0) + int((ref != got).sum())
    for key in sorted(worst):
        if isinstance(worst[key], str):
            print(f"{key:62s} {worst[key]}")
        else:
            print(f"{key:62s} max {worst[key]} LSB, {differing.get(key, 0)} elements differ "
                  f"(of {trials * cout * 36})")

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
