"""List the operators of a TFLite file as JSON: run by *the Python that has Vela* (its venv, or
ours with the ``[vela]`` extra; as a script, by path), where Vela's own generated flatbuffer
readers (``ethosu.vela.tflite``) are installed.

Our process need not have a flatbuffers package; Vela's environment has the reader that Vela
itself uses, so the op list we count is the one Vela saw. Prints one JSON object: {"ops":
[{"type", "inputs", "outputs", "options"}], "inputs": [...], "outputs": [...]}; tensors are
{"name", "shape"}.
"""

import json
import sys

from ethosu.vela.tflite import Model
from ethosu.vela.tflite.BuiltinOperator import BuiltinOperator
from ethosu.vela.tflite.BuiltinOptions import BuiltinOptions

BUILTIN_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
OPTION_NAMES = {v: k for k, v in vars(BuiltinOptions).items() if not k.startswith("_")}


def _options(op):
    """Stride, dilation and padding of the ops that have them (conv, pool, transpose conv)."""
    kind = OPTION_NAMES.get(op.BuiltinOptionsType(), "")
    table = op.BuiltinOptions()
    if table is None or kind not in ("Conv2DOptions", "DepthwiseConv2DOptions", "Pool2DOptions",
                                     "TransposeConvOptions", "Conv3DOptions"):
        return {}
    module = __import__(f"ethosu.vela.tflite.{kind}", fromlist=[kind])
    opts = getattr(module, kind)()
    opts.Init(table.Bytes, table.Pos)
    out = {"padding": ["SAME", "VALID"][opts.Padding()] if opts.Padding() in (0, 1) else "?"}
    for name in ("StrideH", "StrideW", "StrideD", "DilationHFactor", "DilationWFactor",
                 "DilationDFactor", "DepthMultiplier", "FilterHeight", "FilterWidth"):
        if hasattr(opts, name):
            out[name] = int(getattr(opts, name)())
    return out


def main(path):
    with open(path, "rb") as f:
        buf = f.read()
    model = Model.Model.GetRootAsModel(buf, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = BUILTIN_NAMES.get(builtin, str(builtin))
        if name == "CUSTOM":
            name = "CUSTOM:" + (code.CustomCode() or b"").decode()
        codes.append(name)
    graph = model.Subgraphs(0)

    def tensor(index):
        if index < 0:
            return None
        t = graph.Tensors(index)
        shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        return {"name": (t.Name() or b"").decode(), "shape": shape}

    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        ops.append({"type": codes[op.OpcodeIndex()],
                    "inputs": [tensor(int(j)) for j in op.InputsAsNumpy()] if op.InputsLength()
                    else [],
                    "outputs": [tensor(int(j)) for j in op.OutputsAsNumpy()]
                    if op.OutputsLength() else [],
                    "options": _options(op)})
    print(json.dumps({"ops": ops,
                      "inputs": [tensor(int(j)) for j in graph.InputsAsNumpy()],
                      "outputs": [tensor(int(j)) for j in graph.OutputsAsNumpy()]}))


if __name__ == "__main__":
    main(sys.argv[1])
