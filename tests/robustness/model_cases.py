"""Tiny hand-built models for the model-semantics robustness cases, and a way to run the command
line on one and see everything a user would: exit code, stderr lines, what was written."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from convrewrite import cli


def conv_model(cin: int = 4, cout: int = 4, k: int = 3, hw: int = 8, attrs: dict | None = None,
               opset: int = 17, ir: int | None = None, dtype: int = TensorProto.FLOAT,
               wshape: tuple | None = None, name: str = "conv", bias: bool = True,
               weight_input: bool = False, bias_input: bool = False,
               initializers_as_inputs: bool = False, batch: "int | str" = 1) -> onnx.ModelProto:
    """One conv ``x -> y`` (weights seeded); the knobs make it invalid or unusual."""
    attrs = dict(attrs or {})
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    group = attrs.get("group", 1)
    wshape = wshape or (cout, cin // group, k, k)
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal(wshape).astype(np_dtype), "W")
    bias_t = numpy_helper.from_array(rng.standard_normal(cout).astype(np_dtype), "B")
    node = helper.make_node("Conv", ["x", "W"] + (["B"] if bias else []), ["y"], name=name,
                            **attrs)
    inputs = [helper.make_tensor_value_info("x", dtype, [batch, cin, hw, hw])]
    inits = [weight] + ([bias_t] if bias else [])
    if weight_input:
        inputs.append(helper.make_tensor_value_info("W", dtype, list(wshape)))
        inits = [t for t in inits if t.name != "W"]
    if bias_input and bias:
        inputs.append(helper.make_tensor_value_info("B", dtype, [cout]))
        inits = [t for t in inits if t.name != "B"]
    if initializers_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", dtype, ["n", "c", "h", "w"])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir is not None:
        model.ir_version = ir
    return model


def then(model: onnx.ModelProto, op: str, name: str, domain: str = "",
         **attrs) -> onnx.ModelProto:
    """``model`` with one more node after its output."""
    out = model.graph.output[0]
    node = helper.make_node(op, [out.name], [out.name + "_2"], name=name, domain=domain, **attrs)
    model.graph.node.append(node)
    out.name = out.name + "_2"
    if domain and domain not in {i.domain for i in model.opset_import}:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: list[str]
    written: bool
    output: Path
    input_unchanged: bool


def run_cli(tmp_path: Path, model: onnx.ModelProto, target: str = "k210",
            *flags: str) -> Outcome:
    """The command line on ``model`` saved under ``tmp_path``: what a user sees and gets."""
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    before = path.read_bytes()
    output = tmp_path / "out.onnx"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(path), "--target", target, "-o", str(output), *flags])
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return Outcome(code, out.getvalue(), lines, output.exists(), output,
                   path.read_bytes() == before)
