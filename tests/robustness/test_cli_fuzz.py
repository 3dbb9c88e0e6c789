"""A mutation fuzzer (``-m fuzz``, off by default): protobuf bytes and fields of small models, and
target YAML text, fed to the command line in process. Every run must keep every promise the
harness checks (never exit 4, one stderr line, inputs untouched, no temp files).

The run does not stop at the first broken promise: it collects them (with the input saved under
``$CONVREWRITE_FUZZ_DIR`` if set) and fails at the end, after printing the exit-code histogram
(also written as JSON to ``$CONVREWRITE_FUZZ_DIR/<test>.json``). ``$CONVREWRITE_FUZZ_EXAMPLES``
sets the number of examples per test (default 10,000).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conv_cases import conv_model
from tests.robustness.harness import Case, run_case
from tests.robustness.models import CHIP_YAML, small_model, wide_model

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("CONVREWRITE_FUZZ_EXAMPLES", "10000"))
OUT = os.environ.get("CONVREWRITE_FUZZ_DIR")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

SEEDS = {
    "wide": wide_model,
    "small": small_model,
    "conv3d": lambda: conv_model(cin=8, cout=8, kernel=(3, 3, 3), spatial=(4, 6, 6),
                                 pads=(1,) * 6),
    "transposed": lambda: conv_model(op="ConvTranspose", cin=8, cout=8, strides=(2, 2),
                                     spatial=(6, 6)),
    "grouped": lambda: conv_model(cin=32, cout=32, groups=4, spatial=(8, 8), pads=(1, 1, 1, 1)),
    "qdq": lambda: conv_model(cin=16, cout=16, weight_form="qdq_channel", spatial=(6, 6)),
}
SEED_BYTES = {name: build().SerializeToString() for name, build in SEEDS.items()}
TARGETS = ("chip.yaml", "generic", "k210", "ethos-u55", "nvdla")
FLAGS = ((), ("--no-verify",), ("--check-only",), ("--seed", "3"))


class Tally:
    def __init__(self, name: str):
        self.name, self.codes, self.broken = name, Counter(), []

    def run(self, files: dict[str, bytes], argv: list[str]) -> None:
        def setup(folder: Path) -> list:
            for rel, data in files.items():
                (folder / rel).write_bytes(data)
            return argv
        with tempfile.TemporaryDirectory() as tmp:
            try:
                result = run_case(Case("fuzz", setup, expect=(0, 1, 2, 3)), Path(tmp))
                self.codes[result.code] += 1
            except Exception as exc:        # noqa: BLE001 - count every broken promise, go on
                code = str(exc).split("exit ", 1)[-1].split()[0] if "exit " in str(exc) else "?"
                self.codes[f"broken:{code}"] += 1
                self.broken.append(str(exc).splitlines()[0][:300])
                if OUT:
                    keep = Path(OUT) / f"{self.name}-{len(self.broken)}"
                    keep.mkdir(parents=True, exist_ok=True)
                    for rel, data in files.items():
                        (keep / rel).write_bytes(data)
                    (keep / "argv.json").write_text(json.dumps(argv))
                    (keep / "error.txt").write_text(str(exc))

    def finish(self) -> None:
        summary = {"examples": sum(self.codes.values()),
                   "codes": {str(k): v for k, v in sorted(self.codes.items(), key=str)},
                   "broken": self.broken[:50]}
        print(f"\n{self.name}: {json.dumps(summary['codes'])} over {summary['examples']} runs")
        if OUT:
            Path(OUT).mkdir(parents=True, exist_ok=True)
            (Path(OUT) / f"{self.name}.json").write_text(json.dumps(summary, indent=1))
        assert not self.broken, f"{len(self.broken)} broken promises, first: {self.broken[:3]}"


def _mutate_bytes(data: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, pos, length, blob in ops:
        if not out:
            out = bytearray(blob)
            continue
        pos %= len(out)
        if kind == 0:                                   # flip bits of one byte
            out[pos] ^= (length % 255) + 1
        elif kind == 1:                                 # delete a range
            del out[pos:pos + length]
        elif kind == 2:                                 # insert bytes
            out[pos:pos] = blob
        elif kind == 3:                                 # overwrite with bytes
            out[pos:pos + len(blob)] = blob
        elif kind == 4:                                 # duplicate a range
            out[pos:pos] = out[pos:pos + length]
        else:                                           # truncate
            del out[pos:]
    return bytes(out)


byte_ops = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1 << 20), st.integers(1, 64),
                              st.binary(min_size=1, max_size=16)), min_size=1, max_size=4)


def test_fuzz_protobuf_bytes():
    tally = Tally("protobuf_bytes")

    @SETTINGS
    @given(st.sampled_from(sorted(SEED_BYTES)), byte_ops, st.sampled_from(TARGETS),
           st.sampled_from(FLAGS))
    def one(seed, ops, target, flags):
        data = _mutate_bytes(SEED_BYTES[seed], ops)
        tail = [] if "--check-only" in flags else ["-o", "out.onnx"]
        tally.run({"in.onnx": data, "chip.yaml": CHIP_YAML.encode()},
                  ["in.onnx", "--target", target, *flags, *tail])
    one()
    tally.finish()


# Field-level mutations: what a parser-level fuzzer rarely reaches (the file parses; its values
# are hostile).
INT_VALUES = st.one_of(st.integers(-3, 9), st.sampled_from([0, -1, 2**31 - 1, -2**31, 2**63 - 1,
                                                           1000, 65536]))


def _mutate_fields(model: onnx.ModelProto, data) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(["attr", "dims", "dtype", "opset", "ir", "op", "shape",
                                           "input", "drop_attr", "raw"]))
        nodes = list(m.graph.node)
        node = data.draw(st.sampled_from(nodes)) if nodes else None
        if where == "attr" and node is not None and node.attribute:
            a = data.draw(st.sampled_from(list(node.attribute)))
            if a.ints:
                i = data.draw(st.integers(0, len(a.ints) - 1))
                a.ints[i] = data.draw(INT_VALUES)
                if data.draw(st.booleans()):
                    a.ints.append(data.draw(INT_VALUES))
            elif a.type == onnx.AttributeProto.INT:
                a.i = data.draw(INT_VALUES)
            elif a.type == onnx.AttributeProto.STRING:
                a.s = data.draw(st.sampled_from([b"SAME_UPPER", b"SAME_LOWER", b"VALID",
                                                 b"NOTSET", b"bogus", b""]))
        elif where == "dims" and m.graph.initializer:
            t = data.draw(st.sampled_from(list(m.graph.initializer)))
            if t.dims:
                t.dims[data.draw(st.integers(0, len(t.dims) - 1))] = data.draw(INT_VALUES)
        elif where == "dtype" and m.graph.initializer:
            t = data.draw(st.sampled_from(list(m.graph.initializer)))
            t.data_type = data.draw(st.integers(0, 25))
        elif where == "opset":
            m.opset_import[0].version = data.draw(st.sampled_from([1, 6, 7, 9, 10, 11, 13, 99,
                                                                   0, -1]))
        elif where == "ir":
            m.ir_version = data.draw(st.sampled_from([0, 1, 3, 4, 7, 99]))
        elif where == "op" and node is not None:
            node.op_type = data.draw(st.sampled_from(["Conv", "ConvTranspose", "Relu", "Add",
                                                      "Foo", "", "MaxPool", "Identity"]))
            if data.draw(st.booleans()):
                node.domain = data.draw(st.sampled_from(["", "com.unknown", "ai.onnx.ml"]))
        elif where == "shape":
            vi = data.draw(st.sampled_from(list(m.graph.input) + list(m.graph.output)))
            dims = vi.type.tensor_type.shape.dim
            if dims:
                d = dims[data.draw(st.integers(0, len(dims) - 1))]
                if data.draw(st.booleans()):
                    d.dim_value = data.draw(st.integers(0, 70))
                else:
                    d.dim_param = data.draw(st.sampled_from(["N", "batch", "H"]))
        elif where == "input" and node is not None and node.input:
            names = [t.name for t in m.graph.initializer] + [i for n in nodes for i in n.output]
            node.input[data.draw(st.integers(0, len(node.input) - 1))] = \
                data.draw(st.sampled_from(names + ["", "missing"]))
        elif where == "drop_attr" and node is not None and node.attribute:
            del node.attribute[data.draw(st.integers(0, len(node.attribute) - 1))]
        elif where == "raw" and m.graph.initializer:
            t = data.draw(st.sampled_from(list(m.graph.initializer)))
            if t.raw_data:
                t.raw_data = t.raw_data[:data.draw(st.integers(0, len(t.raw_data)))]
    return m


def test_fuzz_model_fields():
    tally = Tally("model_fields")
    models = {name: build() for name, build in SEEDS.items()}

    @SETTINGS
    @given(st.sampled_from(sorted(models)), st.data(), st.sampled_from(TARGETS),
           st.sampled_from(FLAGS))
    def one(seed, data, target, flags):
        m = _mutate_fields(models[seed], data)
        tail = [] if "--check-only" in flags else ["-o", "out.onnx"]
        tally.run({"in.onnx": m.SerializeToString(), "chip.yaml": CHIP_YAML.encode()},
                  ["in.onnx", "--target", target, *flags, *tail])
    one()
    tally.finish()


YAML_SEEDS = [
    CHIP_YAML,
    "name: t\nextends: generic\nconv: {max_in_channels: 16, kernel_shapes: [[1, 1], [3, 3]]}\n"
    "verify: {rtol: 1.0e-4, atol: 1.0e-5}\nops: [Conv, Add, Concat]\n",
    "name: t\nconv:\n  max_stride: 1\n  max_pad: 1\n  symmetric_pad: true\n  groups: [regular]\n"
    "rewrite: {accumulate: tree, input_split: slice}\nmax_tensor_rank: 4\n",
]
YAML_TOKENS = ["&a ", "*a", "!!python/object:os.system ", "{", "}", "[", "]", ": ", "\n", "- ",
               ".nan", ".inf", "-1", "0", "1e999", "null", "~", "extends: t.yaml\n",
               "extends: generic\n", "'", '"', "\t", "\x00", "\ufeff", "é", "? ", "---\n",
               "%YAML 1.1\n", "<<: ", "max_in_channels", "conv", "verify", "atol", "9" * 30]


def test_fuzz_yaml_text():
    tally = Tally("yaml_text")
    model = small_model().SerializeToString()

    @SETTINGS
    @given(st.sampled_from(YAML_SEEDS),
           st.lists(st.tuples(st.integers(0, 4), st.integers(0, 400),
                              st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=6))),
                    min_size=1, max_size=5),
           st.sampled_from(["utf-8", "utf-16", "latin-1"]))
    def one(seed, ops, encoding):
        text = seed
        for kind, pos, token in ops:
            pos %= max(len(text), 1)
            if kind == 0:
                text = text[:pos] + token + text[pos:]
            elif kind == 1:
                text = text[:pos] + text[pos + len(token) + 1:]
            elif kind == 2:
                text = text[:pos] + token + text[pos + len(token):]
            elif kind == 3:
                text = text.replace(token, "", 1) if token else text[:pos]
            else:
                text = text + token
        try:
            blob = text.encode(encoding)
        except UnicodeEncodeError:
            blob = text.encode("utf-8")
        tally.run({"in.onnx": model, "t.yaml": blob},
                  ["in.onnx", "--target", "t.yaml", "--check-only"])
    one()
    tally.finish()
