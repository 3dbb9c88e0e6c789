"""Command line: ``convrewrite MODEL --target CFG [-o OUT]``, ``convrewrite verify A B``,
``convrewrite --list-targets``.

Exit codes: 0 done and verified; 1 verification mismatch; 2 bad input (file, model, YAML, flags);
3 convs remain that the target cannot run. Errors are one line on stderr; nothing is written then,
and the input is never written over.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import api
from .errors import BadInputError, ConvRewriteError
from .graph import copy_model_file, file_uses_external_data, load_model_files, save_model
from .models import BUILDERS
from .outputs import Reservation, check_outputs
from .report import Report
from .rules import describe_rules
from .sparse.inputs import sparse_feeds
from .sparse.tvm_model import has_sparse_convs, sparse_check
from .target import load_target, preset_names
from .tvm import require_tvm
from .tvm.build import check_model
from .tvm.machines import parse_kind
from .tvm.remote import check_tracker, parse_tracker
from .vendors.env import ONNX2TF, VELA
from .vendors.vela import vela_config, vendor_check
from .verify import Tolerance, make_inputs, parse_input_shapes

DEMO_DEFAULT = "demo_wide"


def one_line(text: object) -> str:
    """A message as one printable line: a newline or control character inside it (a YAML key
    or a file name the user wrote) is shown escaped, never breaking the one-line promise."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``convrewrite: error: ...``, exit 2) like every other
    bad input, not the whole usage text."""

    def error(self, message: str):
        text = one_line(" ".join(message.split()))
        print(f"convrewrite: error: {text} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text}")
    return value


def _add_verify_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", metavar="FILE.npz", help="real inputs, one array per model input")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:1x3x224x224",
                   help="shape for an input with dynamic dims (default: batch 1, other dims 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--rtol", type=_non_negative, help="relative tolerance (default: per dtype)")
    p.add_argument("--atol", type=_non_negative, help="absolute tolerance (default: per dtype)")
    p.add_argument("--report", metavar="FILE.json", help="also write the report as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print only errors and the status")


def rewrite_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="convrewrite",
        description="Rewrite the convolutions of an ONNX model so that each fits a target "
                    "accelerator, and verify the result on onnxruntime. "
                    "Also: 'convrewrite verify A.onnx B.onnx' compares two models.",
        epilog="exit codes: 0 ok, 1 verification mismatch, 2 bad input, 3 convs remain that the "
               "target cannot run (or, with --vendor-check, that its compiler keeps off the NPU), "
               "4 internal error, 5 a vendor toolchain is not installed, 6 a vendor tool failed")
    p.add_argument("model", nargs="?", help="the ONNX model to rewrite")
    p.add_argument("--target", "-t", help="a preset name (see --list-targets) or a YAML file")
    p.add_argument("-o", "--output", help="where to write the result "
                                          "(default: MODEL.<target>.onnx beside the model)")
    p.add_argument("--demo", nargs="?", const=DEMO_DEFAULT, metavar="NAME",
                   help=f"use a built-in model instead of MODEL (default {DEMO_DEFAULT})")
    p.add_argument("--check-only", action="store_true",
                   help="only report what the target rejects; write nothing")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime checks")
    p.add_argument("--list-targets", action="store_true", help="list the shipped presets")
    p.add_argument("--list-rules", action="store_true", help="list the target YAML keys")
    p.add_argument("--tvm", metavar="llvm|cuda",
                   help="also import the result into TVM Relax, build it for the CPU (llvm) or "
                        "CUDA with our schedules, run it and check it against onnxruntime (CUDA "
                        "runs only where a GPU is present)")
    p.add_argument("--tvm-out", metavar="DIR",
                   help="with --tvm: write the compiled library (and the CUDA source) here")
    p.add_argument("--tvm-tune", metavar="TRIALS", type=int,
                   help="with --tvm llvm: tune what our kernels do not cover with MetaSchedule "
                        "(TRIALS measured candidates), into a database kept in "
                        "~/.cache/convrewrite/tuning ($CONVREWRITE_TUNING_DIR, $XDG_CACHE_HOME); "
                        "functions already in it are reused, not tuned again")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT",
                   help="with --tvm: run and time the build on a machine an RPC tracker hands "
                        "out (python -m tvm.exec.rpc_tracker / rpc_server), not here")
    p.add_argument("--rpc-key", metavar="KEY", help="the key of the RPC server to use")
    p.add_argument("--vendor-check", action="store_true",
                   help="also compile the original and the result with the target's vendor "
                        "compiler (Arm Vela for the ethos-u presets, through onnx2tf to int8 "
                        "TFLite; venvs from `python -m convrewrite.vendors.install`) and report "
                        "what runs on the NPU and the CPU, and why; exit 3 if a conv of the "
                        "result stays off the NPU")
    p.add_argument("--vendor-out", metavar="DIR",
                   help="with --vendor-check: keep the TFLite files and Vela's output here")
    p.add_argument("--sparse-input", action="append", default=[], metavar="NAME[:FRACTION]",
                   help="a tensor that is mostly zero, or a [B, 1, ...] mask multiplied into conv "
                        "inputs: the convs reading it become sparse convs where that is cheaper "
                        "than dense, planned for FRACTION of its sites active (default 0.02; "
                        "NAME:all: every conv that can, no cost choice) (repeatable)")
    _add_verify_flags(p)
    return p


def verify_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="convrewrite verify",
                                description="Check that two models agree on onnxruntime.")
    p.add_argument("original")
    p.add_argument("rewritten")
    p.add_argument("--exact", action="store_true",
                   help="apply atol as given (default scales it by the outputs' magnitude, as "
                        "for rewrites that regroup sums)")
    _add_verify_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["verify"]:
            return _verify(verify_parser().parse_args(argv[1:]))
        return _rewrite(rewrite_parser(), rewrite_parser().parse_args(argv))
    except ConvRewriteError as exc:
        print(f"convrewrite: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("convrewrite: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as exc:        # noqa: BLE001 - a bug of ours: still one line, still no output
        if os.environ.get("CONVREWRITE_DEBUG"):
            raise
        print(f"convrewrite: internal error: {type(exc).__name__}: {one_line(exc)} (set "
              "CONVREWRITE_DEBUG=1 "
              "for the traceback; please report it)", file=sys.stderr)
        return 4


def _tolerance(args: argparse.Namespace) -> Tolerance:
    return Tolerance(atol=args.atol, rtol=args.rtol)


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return iter
    return lambda items: tqdm(items, desc="verifying rewrites", unit="rewrite", leave=False,
                              file=sys.stderr, mininterval=0.5)


def _rewrite(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.list_targets:
        for name in preset_names():
            target = load_target(name)
            print(f"{name:12s} {target.description}")
        return 0
    if args.list_rules:
        for key, doc, default in describe_rules():
            print(f"{key:42s} {doc} (default: {default})")
        return 0
    if (args.model is None) == (args.demo is None):
        raise BadInputError("give exactly one of MODEL or --demo (see --help)")
    if not args.target:
        raise BadInputError("--target is required: a preset name (see --list-targets) or a YAML "
                            "file")
    target = load_target(args.target)
    shapes = parse_input_shapes(args.input_shape)
    _check_tvm_flags(args)
    _check_vendor_flags(args, target)
    model_path, model, reads = _source(args)
    reads += _target_reads(target)
    if args.inputs:
        reads.append(("the --inputs file", Path(args.inputs)))
    report_path = Path(args.report) if args.report else None
    output = None if args.check_only else _output_path(args, model_path, target.name)
    check_outputs([(flag, p) for flag, p in (("-o", output), ("--report", report_path)) if p],
                  reads)
    reservation = Reservation(report_path) if report_path else None
    try:
        return _rewrite_checked(args, target, shapes, model_path, model, reads, output,
                                reservation)
    finally:
        if reservation is not None:
            reservation.discard()


def _rewrite_checked(args, target, shapes, model_path, model, reads, output, reservation) -> int:
    """The rewrite once every output path has passed its checks (and the report's staging file
    exists)."""
    if args.check_only:
        report = api.check(model, target, input_shapes=shapes)
        report.model = str(model_path)
        if args.vendor_check:
            report.vendor = _vendor_check(model, None, target, args, shapes)
        return _finish(report, args, reservation)
    started = time.perf_counter()
    rewritten, report = api.rewrite(model, target, verify=not args.no_verify, inputs=args.inputs,
                                    seed=args.seed, input_shapes=shapes,
                                    tolerance=_tolerance(args), progress=_progress(args.quiet),
                                    sparse_inputs=args.sparse_input)
    report.model = str(model_path)
    if report.status != "mismatch":
        external = model_path.exists() and file_uses_external_data(model_path)
        if rewritten is model and model_path.exists() and not external:
            copy_model_file(model_path, output)          # nothing changed: byte-identical
        else:
            save_model(rewritten, output, external_data=external or None,
                       protected=[p for _, p in reads])
        report.output = str(output)
        if args.tvm:
            report.tvm = _tvm_check(model, rewritten, args, shapes)
        if args.vendor_check:
            report.vendor = _vendor_check(model, rewritten, target, args, shapes)
    report.timings["total"] = time.perf_counter() - started
    return _finish(report, args, reservation)


def _target_reads(target) -> list[tuple[str, Path]]:
    return [(f"the target file {f}" if i == 0 else f"the target's extends: file {f}", Path(f))
            for i, f in enumerate(target.files)]


def _check_tvm_flags(args: argparse.Namespace) -> None:
    """Bad --tvm flags fail before any work (TVM itself is imported only when asked)."""
    for flag, value in (("--tvm-out", args.tvm_out), ("--rpc-tracker", args.rpc_tracker),
                        ("--rpc-key", args.rpc_key), ("--tvm-tune", args.tvm_tune is not None)):
        if value and not args.tvm:
            raise BadInputError(f"{flag} needs --tvm llvm|cuda")
    if not args.tvm:
        return
    if args.check_only:
        raise BadInputError("--tvm builds the rewritten model; it cannot go with --check-only")
    parse_kind(args.tvm)
    require_tvm()
    if args.tvm_tune is not None and (args.tvm != "llvm" or args.tvm_tune < 1):
        raise BadInputError("--tvm-tune TRIALS: a positive number of trials, with --tvm llvm "
                            "(candidates are measured here, or on the --rpc-tracker server)")
    if args.tvm_out and Path(args.tvm_out).exists() and not Path(args.tvm_out).is_dir():
        raise BadInputError(f"--tvm-out {args.tvm_out} is a file; give a folder")
    if args.rpc_tracker or args.rpc_key:
        args.remote = parse_tracker(args.rpc_tracker, args.rpc_key)
        check_tracker(args.remote)


def _check_vendor_flags(args: argparse.Namespace, target) -> None:
    """Bad --vendor flags, a target without a vendor compiler and missing venvs fail before any
    work."""
    if args.vendor_out and not args.vendor_check:
        raise BadInputError("--vendor-out needs --vendor-check")
    if not args.vendor_check:
        return
    vela_config(target)
    ONNX2TF.require()
    VELA.require()
    if args.vendor_out and Path(args.vendor_out).exists() and not Path(args.vendor_out).is_dir():
        raise BadInputError(f"--vendor-out {args.vendor_out} is a file; give a folder")


def _vendor_check(original, rewritten, target, args: argparse.Namespace, shapes) -> dict:
    feeds = make_inputs(original, seed=args.seed, shapes=shapes, npz=args.inputs) \
        if args.inputs else None
    return vendor_check(original, rewritten, target, feeds=feeds, seed=args.seed,
                        input_shapes=shapes, out_dir=args.vendor_out)


def _tvm_check(original, model, args: argparse.Namespace, shapes) -> dict:
    feeds = make_inputs(model, seed=args.seed, shapes=shapes, npz=args.inputs)
    if args.inputs is None:     # valid sites for sparse models, as the verification drew them
        feeds = sparse_feeds(original, feeds, args.seed, args.sparse_input,
                             fixed=set(shapes or {}))
    remote = getattr(args, "remote", None)
    if has_sparse_convs(original) and remote is None and args.tvm_tune is None:
        checked = sparse_check(original, model, args.tvm, feeds, _tolerance(args), args.tvm_out)
        if checked is not None:
            return checked.to_dict()
    return check_model(model, args.tvm, feeds, _tolerance(args), out_dir=args.tvm_out,
                       remote=remote, tune_trials=args.tvm_tune).to_dict()


def _source(args: argparse.Namespace):
    if args.demo is not None:
        if args.demo not in BUILDERS:
            raise BadInputError(f"unknown demo model {args.demo!r} "
                                f"(built-in: {', '.join(sorted(BUILDERS))})")
        return Path(f"{args.demo}.onnx"), BUILDERS[args.demo](), []
    path = Path(args.model)
    model, files = load_model_files(path)
    reads = [("the input model", files[0])]
    reads += [(f"the input's external data {f.name}", f) for f in files[1:]]
    return path, model, reads


def _output_path(args: argparse.Namespace, model_path: Path, target_name: str) -> Path:
    if args.output:
        output = Path(args.output)
    else:
        stem = model_path.name[:-5] if model_path.name.endswith(".onnx") else model_path.name
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in target_name)
        output = model_path.with_name(f"{stem}.{safe}.onnx")
    return output


def _finish(report: Report, args: argparse.Namespace,
            reservation: Reservation | None = None) -> int:
    if args.report:
        (reservation or Reservation(Path(args.report))).commit(report.to_json() + "\n")
    if args.quiet:
        print(f"status: {report.status}")
    else:
        print(report.render())
    return report.exit_code


def _verify(args: argparse.Namespace) -> int:
    reads, models = [], []
    for which, name in (("the original model", args.original), ("the rewritten model",
                                                                   args.rewritten)):
        model, files = load_model_files(name)
        models.append(model)
        reads += [(which, files[0])] + [(f"{which}'s external data {f.name}", f) for f in files[1:]]
    if args.inputs:
        reads.append(("the --inputs file", Path(args.inputs)))
    if args.report:
        check_outputs([("--report", Path(args.report))], reads)
    report = api.verify(*models, inputs=args.inputs, seed=args.seed,
                        input_shapes=parse_input_shapes(args.input_shape),
                        tolerance=_tolerance(args),
                        kind="exact" if args.exact else "reassociating")
    report.model, report.target = args.original, args.rewritten
    return _finish(report, args)


if __name__ == "__main__":
    sys.exit(main())
