"""ONNX -> fully int8 TFLite with onnx2tf, the path Ethos-U users take from ONNX.

onnx2tf 2.6.9 runs in its own venv (Python 3.12, TensorFlow). Measured here: its default
``flatbuffer_direct`` backend kept channel-strided Slices behind a TRANSPOSE and wrote dynamic dims
after Split on rewritten graphs, which Vela then puts on the CPU; ``-tb tf_converter`` converts
the same files faithfully, so that is the backend used. onnx2tf writes its simplified model over
its ``-i`` file, so it gets a copy. Calibration (``-oiqt -cind``) wants data in TF's dimension
order (channels last), pre-normalised to [0, 1] and mapped back by (x - mean) / std: each input's
samples are scaled by their own range and the mean/std undo that, so the calibrated ranges are the
inputs' real ones.

onnx2tf gives a conv's (or pool's) output in TF's channels-last order, but an Add that writes a
graph output it turns back to the ONNX order: its shape "rescue" sees the declared NCHW shape
differ from the NHWC result and transposes both operands (measured: a kernel split's final Add,
3x3 dilation 33x1 over 16x80x24, became ADD + TRANSPOSE perm 0 3 1 2, which Vela 3's core puts on
the CPU). The judge asks for every model's outputs in the one layout a conv's get: such an Add's
output is transposed back to channels-last by a parameter replacement (``-prf``), and TFLite's
converter folds the pair away (all 9 ops on the NPU). A Transpose to channels-first (perm
0, r-1, 1, .., r-2) that writes a graph output is left channels-first by onnx2tf too (its TF
transpose of the channels-last data; inside a graph the next conv's own transpose cancels it):
a replacement of its perm by the identity keeps it channels-last (measured: a sub-pixel
ConvTranspose's channels-last interleave, its final TRANSPOSE perm 0 3 1 2 on the CPU of Vela 3's
core, then every op on the NPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx

from ..errors import BadInputError
from .env import ONNX2TF, VendorFailed

DEFAULT_TIMEOUT_S = 1800
# -tb tf_converter: see above. -rtpo erf: Erf (GELU's) as onnx2tf's elementwise pseudo-op
# (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7) instead of TensorFlow's Erf, which has no TFLite
# builtin: it became FlexErf, which int8 calibration cannot run, so no int8 TFLite was written
# (ConvNeXt). -v warn, not -n: onnx2tf says why an int8 conversion failed only as a warning.
FLAGS = ("-tb", "tf_converter", "-oiqt", "-rtpo", "erf", "-v", "warn")
DRIVER = Path(__file__).with_name("onnx2tf_driver.py")
CALIBRATION_SAMPLES = 4


def channels_last(x: np.ndarray) -> np.ndarray:
    """NC... -> N...C, the layout onnx2tf gives 3-D to 5-D inputs."""
    return np.moveaxis(x, 1, -1) if x.ndim >= 3 else x


def channels_last_perm(rank: int) -> list[int]:
    return [0, *range(2, rank), 1]


def _to_channels_first(node: onnx.NodeProto, rank: int) -> bool:
    perms = [list(a.ints) for a in node.attribute if a.name == "perm"]
    return node.op_type == "Transpose" and perms == [[0, rank - 1, *range(1, rank - 1)]]


def output_layout_replacements(model: onnx.ModelProto) -> list[dict]:
    """onnx2tf parameter replacements that keep each graph output written by an Add or by a
    Transpose to channels-first in channels-last order (see the module note): one per 3-D to 5-D
    output of static shape, for an Add only where that shape changes when its channels move last
    (where it does not, onnx2tf's rescue does not fire)."""
    shapes = {o.name: [d.dim_value if d.HasField("dim_value") else None
                       for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    out = []
    for node in model.graph.node:
        if node.op_type not in ("Add", "Transpose") or node.output[0] not in shapes:
            continue
        shape = shapes[node.output[0]]
        if not 3 <= len(shape) <= 5 or None in shape:
            continue
        perm = channels_last_perm(len(shape))
        if node.op_type == "Transpose":
            if _to_channels_first(node, len(shape)):    # its TF transpose becomes no move
                out.append({"op_name": node.name, "param_target": "attributes",
                            "param_name": "perm", "values": list(range(len(shape)))})
        elif [shape[i] for i in perm] != shape:
            out.append({"op_name": node.name, "param_target": "outputs",
                        "param_name": node.output[0], "post_process_transpose_perm": perm})
    return out


def conversion_tag(model: onnx.ModelProto) -> str:
    """What, beyond the model's bytes, changes how it is converted (a cache key's suffix)."""
    return "-nhwc-out" if output_layout_replacements(model) else ""


def calibration_set(samples: list[dict[str, np.ndarray]]) -> dict[str, tuple[np.ndarray, float,
                                                                             float]]:
    """Per input: the samples stacked along the batch axis in channels-last order, scaled to
    [0, 1], and the (mean, std) that map them back to the real values."""
    out = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        if not all(np.issubdtype(v.dtype, np.floating) for v in values):
            raise BadInputError(f"input {name!r} is {values[0].dtype}: the int8 TFLite "
                                "conversion calibrates float inputs only")
        stacked = np.concatenate([channels_last(v.astype(np.float32)) for v in values])
        lo, hi = float(stacked.min()), float(stacked.max())
        span = hi - lo if hi > lo else 1.0
        out[name] = ((stacked - lo) / span, -lo / span, 1.0 / span)
    return out


@dataclass
class Job:
    """One conversion: the model, its calibration samples and the folder it is made in."""

    model: onnx.ModelProto
    samples: list[dict[str, np.ndarray]]
    work: Path

    @property
    def tflite(self) -> Path:
        return self.work / "model.tflite"

    @cached_property
    def key(self) -> str:
        """What the conversion depends on: the model, its calibration data, onnx2tf's flags and
        the pinned onnx2tf venv."""
        h = hashlib.sha256(self.model.SerializeToString(deterministic=True))
        for name, (data, mean, std) in calibration_set(self.samples).items():
            h.update(repr((name, data.shape, mean, std)).encode())
            h.update(np.ascontiguousarray(data).tobytes())
        h.update(repr((FLAGS, output_layout_replacements(self.model))).encode())
        h.update(ONNX2TF.requirements().encode())
        return h.hexdigest()

    def done(self) -> bool:
        """This job's TFLite is already there, made from the same inputs (``work/job.sha256``):
        a second --vendor-out or benchmark run into the same folder converts nothing again."""
        stamp = self.work / "job.sha256"
        return self.tflite.is_file() and stamp.is_file() and stamp.read_text() == self.key

    def prepare(self) -> list[str]:
        """Write the model copy and calibration files; return onnx2tf's arguments."""
        self.work.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.work / "tf", ignore_errors=True)
        (self.work / "job.sha256").unlink(missing_ok=True)
        onnx.save(self.model, self.work / "model.onnx")     # a copy: onnx2tf writes over -i
        args = ["-i", "model.onnx", "-o", "tf", *FLAGS]
        replacements = output_layout_replacements(self.model)
        if replacements:
            (self.work / "replace.json").write_text(json.dumps(
                {"format_version": 1, "operations": replacements}, indent=1))
            args += ["-prf", "replace.json"]
        shapes = []
        for k, (name, (data, mean, std)) in enumerate(calibration_set(self.samples).items()):
            np.save(self.work / f"calibration_{k}.npy", data)
            args += ["-cind", name, f"calibration_{k}.npy", f"[{mean!r}]", f"[{std!r}]"]
            shapes.append(f"{name}:{','.join(map(str, self.samples[0][name].shape))}")
        return args + (["-ois", *shapes] if shapes else [])

    def finish(self, exit_code: int) -> Path | VendorFailed:
        """The int8 TFLite, or VendorFailed("no int8 TFLite: <onnx2tf's reason> (log: ...)").
        onnx2tf exits 0 when only its int8 step failed (it warns and goes on), so the file is
        what counts, never the exit code alone."""
        made = self.work / "tf" / "model_full_integer_quant.tflite"
        log = self.work / "onnx2tf.log"
        if exit_code != 0 or not made.is_file():
            text = log.read_text(errors="replace") if log.is_file() else ""
            return VendorFailed(f"no int8 TFLite: {no_tflite_reason(text, exit_code)} "
                                f"(log: {log})")
        shutil.copyfile(made, self.tflite)
        (self.work / "job.sha256").write_text(self.key)
        return self.tflite


def convert_many(jobs: list[Job], timeout: float = DEFAULT_TIMEOUT_S) -> list[Path | VendorFailed]:
    """Convert each job's model to a fully int8 TFLite in one onnx2tf process (onnx2tf's own
    command line per model, see onnx2tf_driver.py); a failed model gives its VendorFailed in its
    place, the others go on."""
    exe = ONNX2TF.require()
    done = [job.done() for job in jobs]
    if any(done):
        made = iter(convert_many([j for j, d in zip(jobs, done) if not d], timeout)
                    if not all(done) else [])
        return [job.tflite if d else next(made) for job, d in zip(jobs, done)]
    requests = [{"cwd": str(job.work.resolve()), "argv": job.prepare()} for job in jobs]
    env = dict(os.environ, PATH=f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", NO_COLOR="1")
    try:
        run = subprocess.run([str(exe.parent / "python"), str(DRIVER)], input=json.dumps(requests),
                             env=env, capture_output=True, text=True,
                             timeout=timeout * max(1, len(jobs)))
    except subprocess.TimeoutExpired:
        raise VendorFailed(f"onnx2tf did not finish in {timeout:.0f} s per model") from None
    codes = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            codes[item["index"]] = item["exit_code"]
    if run.returncode != 0 and len(codes) < len(jobs):
        crash = VendorFailed(f"no int8 TFLite: onnx2tf crashed (exit {run.returncode}): "
                             f"{last_error(run.stderr)}")
        return [job.finish(codes[i]) if i in codes else crash for i, job in enumerate(jobs)]
    return [job.finish(codes.get(i, 1)) for i, job in enumerate(jobs)]


def convert(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]], work: Path,
            timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Write ``model`` as a fully int8 TFLite under ``work`` and return its path.

    ``samples``: calibration feeds (each one dict of model inputs at the model's own batch)."""
    result = convert_many([Job(model, samples, work)], timeout)[0]
    if isinstance(result, VendorFailed):
        raise result
    return result


ANSI = re.compile(r"\x1b\[[0-9;]*m")
INT8_FAILED = "Full INT8 Quantization tflite output failed"
EXCEPTION = re.compile(r"^\w+(Error|Exception)\b")


def no_tflite_reason(log: str, exit_code: int) -> str:
    """Why onnx2tf wrote no full-int8 TFLite: the exception of its failed int8 step (which it only
    warns about, exit 0), naming the TensorFlow ops TFLite has no builtin for (FlexErf, ...),
    else its failing exit and error line."""
    lines = [ANSI.sub("", line).strip() for line in log.splitlines()]
    failed = next((i for i, line in enumerate(lines) if INT8_FAILED in line), None)
    if failed is not None:
        exc = next((x for x in reversed(lines[:failed]) if EXCEPTION.match(x)), "")
        flex = sorted(set(re.findall(r"\((Flex\w+)\)", exc)))
        if flex:
            return (f"onnx2tf's int8 quantization failed: TensorFlow op(s) with no TFLite "
                    f"builtin ({', '.join(flex)}), which calibration cannot run")
        return f"onnx2tf's int8 quantization failed: {exc or 'no exception in its log'}"
    if exit_code != 0:
        return f"onnx2tf failed (exit {exit_code}): {last_error(log)}"
    return (f"onnx2tf exited 0 without writing model_full_integer_quant.tflite "
            f"(last line: {last_error(log)})")


def last_error(log: str) -> str:
    """The line of onnx2tf's log that says what went wrong: its first ERROR naming an op, else
    the last exception line."""
    lines = [ANSI.sub("", line).strip() for line in log.splitlines()]
    for line in lines:
        if line.startswith("ERROR: onnx_op_name:"):
            exc = next((x for x in reversed(lines) if re.match(r"^\w+(Error|Exception)\b", x)),
                       "")
            return f"{line[len('ERROR: '):]}{': ' + exc if exc else ''}"
    for line in reversed(lines):
        if re.match(r"^\w+(Error|Exception)\b", line) or line.startswith("ERROR:"):
            return line
    return next((x for x in reversed(lines) if x), "no output")
