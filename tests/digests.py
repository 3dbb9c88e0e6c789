"""Output digests: the sha256 of every rewritten model (built-in models and the real exports in
tests/real/exports, for every preset and a few rewrite options), for checking that a refactoring
changes no output byte.

    python -m tests.digests --write tests/digests.json    # record
    python -m tests.digests --check tests/digests.json    # compare; exit 1 on any difference

``--canonical`` hashes each model with its node names and inner tensor names replaced by their
order of appearance: for checking a refactoring that renames what a lowering emits (and nothing
else) against digests recorded the same way from the commit before it.

Each row also carries a digest of the report (the records' rules, rewrites and costs, and what
remained, without timings or verification numbers), so a change in what the report says shows
even where the model bytes stay the same. Not a unit test: the digests hold for one set of
dependency versions (onnx, onnx-graphsurgeon, protobuf) only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from convrewrite import api
from convrewrite.graph import load_model
from convrewrite.models import BUILDERS
from convrewrite.models.sparse_nets import masked_conv_net, sparse_unet_block_3d
from convrewrite.sparse.inputs import random_sites
from convrewrite.target import load_target, preset_names

EXPORTS = Path(__file__).parent / "real" / "exports"
HOST = {"name": "host", "conv": {"max_in_channels": 4096}}
# Alternative forms a target can ask for, each on a preset that makes them matter.
OPTIONS = {
    "tree-slice": {"extends": "generic", "name": "generic-tree-slice",
                   "rewrite": {"accumulate": "tree", "input_split": "slice",
                               "fuse_chunks": False}},
    "zero-insertion": {"extends": "k210", "name": "k210-zero-insertion",
                       "rewrite": {"transposed_form": "zero_insertion"}},
    "shift-depthwise": {"extends": "generic", "name": "generic-shift-depthwise",
                        "rewrite": {"shift_form": "depthwise"}},
    "shift-fold": {"extends": "generic", "name": "generic-shift-fold",
                   "rewrite": {"shift_form": "fold"}},
}
OPTION_MODELS = ("demo_wide", "resnet18", "dcgan_generator", "unet", "shift_resnet",
                 "shufflenet_v2", "conv3d_net")


def cases():
    """(name, model or path, target, sparse_inputs) for every digest row."""
    for model_name in BUILDERS:
        for preset in preset_names():
            yield f"{model_name} {preset}", lambda m=model_name: BUILDERS[m](), preset, ()
    for model_name in OPTION_MODELS:
        for option, target in OPTIONS.items():
            yield f"{model_name} {option}", lambda m=model_name: BUILDERS[m](), target, ()
    for path in sorted(EXPORTS.glob("*.onnx")):
        for preset in preset_names():
            yield f"{path.name} {preset}", lambda p=path: load_model(p), preset, ()
    coords = random_sites(np.random.default_rng(2), 300, (24, 24, 16), dtype=np.int32)
    yield "sparse_unet_block_3d host", sparse_unet_block_3d, HOST, ()
    yield "sparse_unet_block_3d(coords) host", lambda: sparse_unet_block_3d(coords=coords), HOST, ()
    # mask:all: every conv sparse (at the default plan its 8 -> 16 channels run cheaper dense;
    # the row is here for the region's rewrite)
    yield "masked_conv_net mask host", masked_conv_net, HOST, ("mask:all",)
    yield "masked_conv_net image host", masked_conv_net, HOST, ("image",)


def _report_view(report) -> dict:
    data = report.to_dict()
    for key in ("timings_s", "end_to_end", "inputs", "tvm"):
        data.pop(key, None)
    for record in data["rewrites"]:
        record.pop("verify", None)
    return data


def canonical(model):
    """A copy of ``model`` whose node names and inner tensor names are their order of
    appearance (graph inputs and outputs keep theirs); initializers and value_info sorted."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())

    def rename_graph(graph, names: dict) -> None:
        kept = {v.name for v in (*graph.input, *graph.output)}

        def named(name: str) -> str:
            if not name or name in kept:
                return name
            if name not in names:
                names[name] = f"t{len(names)}"
            return names[name]

        for i, node in enumerate(graph.node):
            node.name = f"n{i}"
            node.input[:] = [named(n) for n in node.input]
            node.output[:] = [named(n) for n in node.output]
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    rename_graph(sub, names)
        for tensor in graph.initializer:
            tensor.name = named(tensor.name)
        for info in graph.value_info:
            info.name = named(info.name)
        ordered = sorted(graph.initializer, key=lambda t: t.name)
        graph.ClearField("initializer")
        graph.initializer.extend(ordered)
        infos = sorted(graph.value_info, key=lambda v: v.name)
        graph.ClearField("value_info")
        graph.value_info.extend(infos)

    rename_graph(model.graph, {})
    return model


def digest(model_fn, target, sparse_inputs, canonical_names: bool = False) -> dict:
    model = model_fn()
    rewritten, report = api.rewrite(model, load_target(target), verify=False,
                                    sparse_inputs=sparse_inputs)
    if canonical_names:
        rewritten = canonical(rewritten)
    view = json.dumps(_report_view(report), sort_keys=True, default=str)
    return {"model": hashlib.sha256(rewritten.SerializeToString()).hexdigest(),
            "report": hashlib.sha256(view.encode()).hexdigest(),
            "status": report.status, "rewrites": len(report.records)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="record the digests into this JSON file")
    parser.add_argument("--check", type=Path, help="compare with the digests in this JSON file")
    parser.add_argument("--only", default="", help="rows whose name contains this text")
    parser.add_argument("--canonical", action="store_true",
                        help="hash the models with node and inner tensor names by order")
    args = parser.parse_args(argv)
    recorded = json.loads(args.check.read_text()) if args.check else {}
    table, differ = {}, []
    for name, model_fn, target, sparse in cases():
        if args.only not in name:
            continue
        row = digest(model_fn, target, sparse, args.canonical)
        table[name] = row
        mark = ""
        if args.check:
            want = recorded.get(name)
            if want is None:
                mark = "  (not recorded)"
            elif want["model"] != row["model"] or want["report"] != row["report"]:
                what = [k for k in ("model", "report") if want[k] != row[k]]
                mark = f"  DIFFERS: {', '.join(what)}"
                differ.append(name)
        print(f"{row['model'][:16]} {row['report'][:12]} {row['status']:8} "
              f"{row['rewrites']:4}  {name}{mark}", flush=True)
    if args.write:
        args.write.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    if args.check:
        print(f"{len(table) - len(differ)} of {len(table)} rows identical"
              + (f"; differ: {', '.join(differ)}" if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
