"""The tool's own time against what users compare it with (issue 16, section 1).

Prints, timed side by side in one run (calls interleaved, the order rotated every round, medians,
the spread of the per-round ratios; onnxruntime's thread-pool spinning off in the baselines, see
shared/FACTS.md), per model:

  (a) rewrite without verification / onnxslim.slim on the same file          goal <= 2
  (b) rewrite with full verification / one onnxruntime session creation + run of the original
                                                                              goal <= 3
  control: that onnxruntime session + run / the same for a copy of the file   must read 1.00

and for a long 1-D signal net tiled for k210 (thousands of rewrites):

  (c) rewrite with full verification / the rewritten model's session creation + run  goal <= 3

Models: ResNet-50 (convrewrite.models) and every --model PATH (e.g. a timm xception41 export),
on a 256-channel target; the 1-D net is built here (--samples long, five convs). Everything is
read from files, as the command line does. Only a run on an idle machine with its control at
1.00 +- 0.02 counts.

Run (about 3-4 minutes on the 2-core machine, idle):
    .venv/bin/python benchmarks/tool_time.py --model /work/exports/xception41.ts.onnx
Quicker look: --rounds 2 --samples 20000; --no-long skips (c).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort

import convrewrite
from convrewrite.models import resnet50
from convrewrite.models.builder import GraphBuilder
from convrewrite.verify import make_inputs

C256 = {"name": "c256", "conv": {"max_in_channels": 256, "max_out_channels": 256}}


def signal_net(samples: int) -> onnx.ModelProto:
    """Five 1-D convs over one long signal (kernels 9 and 5 the K210 lacks, widths far past its
    512): tiled and decomposed into thousands of rewrites."""
    g = GraphBuilder("signal1d", 0, "float32")
    x = g.input("signal", 1, (samples,), 1)
    for i, (out, kernel, stride) in enumerate(((16, 9, 1), (32, 9, 2), (32, 5, 1), (64, 5, 2),
                                               (64, 3, 1)), 1):
        x = g.relu(g.conv(x, out, kernel, stride, name=f"conv{i}"), f"relu{i}")
    g.output(g.linear(g.global_avg_pool(x, "pool"), 12, "head"), "logits")
    return g.build()


def ort_once(path: Path, feeds) -> None:
    """What a user's first inference costs: a session from the file, one run."""
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def rewrite(path: Path, target, verify: bool) -> None:
    _, report = convrewrite.rewrite(str(path), target, verify=verify)
    if report.status != "ok":
        raise SystemExit(f"{path.name}: status {report.status}")


def slim(path: Path) -> None:
    import onnxslim
    onnxslim.slim(str(path))


def side_by_side(fns: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved and the order rotated per round."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def row(label: str, samples: dict[str, list[float]], num: str, den: str, goal: str) -> None:
    ratios = [a / b for a, b in zip(samples[num], samples[den])]
    a, b = statistics.median(samples[num]), statistics.median(samples[den])
    print(f"  {label:58s} {a:7.2f} s / {b:6.2f} s = {a / b:6.2f}x  "
          f"(rounds {min(ratios):.2f}-{max(ratios):.2f}; goal {goal})", flush=True)


def bench_model(name: str, path: Path, tmp: Path, rounds: int, warmup: int) -> None:
    model = onnx.load(str(path))
    feeds = make_inputs(model)
    twin = tmp / f"{path.stem}.copy.onnx"
    twin.write_bytes(path.read_bytes())
    samples = side_by_side({
        "rewrite": lambda: rewrite(path, C256, verify=False),
        "slim": lambda: slim(path),
        "verified": lambda: rewrite(path, C256, verify=True),
        "ort": lambda: ort_once(path, feeds),
        "ort copy": lambda: ort_once(twin, feeds),
    }, rounds, warmup)
    print(f"{name} on c256 ({rounds} rounds):")
    row("(a) rewrite, no verification / onnxslim.slim", samples, "rewrite", "slim", "<= 2")
    row("(b) rewrite + full verification / ort session + run", samples, "verified", "ort",
        "<= 3")
    row("control: ort session + run / the same of a copy", samples, "ort", "ort copy", "1.00")


def bench_long(samples_n: int, tmp: Path, rounds: int) -> None:
    path = tmp / "signal1d.onnx"
    onnx.save(signal_net(samples_n), str(path))
    rewritten, report = convrewrite.rewrite(str(path), "k210", verify=False)
    out = tmp / "signal1d.k210.onnx"
    onnx.save(rewritten, str(out))
    twin = tmp / "signal1d.k210.copy.onnx"
    twin.write_bytes(out.read_bytes())
    feeds = make_inputs(rewritten)
    samples = side_by_side({
        "verified": lambda: rewrite(path, "k210", verify=True),
        "ort": lambda: ort_once(out, feeds),
        "ort copy": lambda: ort_once(twin, feeds),
    }, rounds, 0)
    print(f"1-D signal net, {samples_n} samples, on k210: {len(report.records)} rewrites "
          f"({rounds} rounds):")
    row("(c) rewrite + full verification / rewritten's session + run", samples, "verified",
        "ort", "<= 3")
    row("control: rewritten's session + run / the same of a copy", samples, "ort", "ort copy",
        "1.00")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, action="append", default=[],
                    help="an exported .onnx to time beside ResNet-50 (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--samples", type=int, default=70000, help="the 1-D net's signal length")
    ap.add_argument("--long-rounds", type=int, default=2)
    ap.add_argument("--no-long", action="store_true", help="skip the 1-D net (c)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        resnet = tmp / "resnet50.onnx"
        onnx.save(resnet50(), str(resnet))
        bench_model("ResNet-50 (convrewrite.models)", resnet, tmp, args.rounds, args.warmup)
        for path in args.model:
            bench_model(path.name, path, tmp, args.rounds, args.warmup)
        if not args.no_long:
            bench_long(args.samples, tmp, args.long_rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
