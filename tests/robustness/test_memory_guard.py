"""Verification that cannot fit in memory is refused in one line (exit 2) before it allocates, and a
tiling that would make a conv per tile by the hundred thousand is declined with its reason: both
used to end in the kernel's OOM killer (a 1-D conv over 1e8 samples on k210 reached 21.7 GB
resident) or in exit 4 (numpy's MemoryError on a declared 60000x60000 input)."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convrewrite import memory
from convrewrite.conv import ConvSpec
from convrewrite.errors import BadInputError
from convrewrite.plan.limits import MAX_LOWERED_TILES
from convrewrite.plan.tiling import plan_tiles
from convrewrite.target import load_target
from convrewrite.verify import make_inputs
from tests.robustness.harness import run_cli


def conv_model(x_shape, cout: int, kernel: tuple[int, ...], pads=None) -> onnx.ModelProto:
    """A 'same'-sized conv: a 1x1 kernel, or ``pads`` that keep the map's size."""
    cin = x_shape[1]
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((cout, cin, *kernel)).astype(np.float32), "w")
    attrs = {"pads": list(pads)} if pads else {}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x_shape[0], cout, *x_shape[2:]])],
        [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("text, size", [("8G", 8 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29),
                                        ("1073741824", 1 << 30), ("64k", 64 << 10)])
def test_size_override_parses(monkeypatch, text, size):
    monkeypatch.setenv(memory.ENV, text)
    assert memory.available_bytes() == size


def test_bad_size_override_names_the_variable(monkeypatch):
    monkeypatch.setenv(memory.ENV, "lots")
    with pytest.raises(BadInputError, match=memory.ENV):
        memory.available_bytes()


def test_machine_reports_some_memory(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    room = memory.available_bytes()
    assert room is None or room > 0


def test_seeded_inputs_too_large_are_refused_before_allocating(monkeypatch):
    monkeypatch.setenv(memory.ENV, "8M")
    model = conv_model((1, 4, 1024, 1024), 4, (1, 1))       # 16 MiB of float32 feeds
    with pytest.raises(memory.TooLargeError, match=r"'x' \[1, 4, 1024, 1024\] float32") as info:
        make_inputs(model)
    assert "--no-verify" in str(info.value) and "--input-shape" not in str(info.value)


def test_symbolic_inputs_point_at_input_shape(monkeypatch):
    monkeypatch.setenv(memory.ENV, "1M")
    model = conv_model((1, 4, "H", "W"), 4, (1, 1))
    with pytest.raises(memory.TooLargeError, match="--input-shape"):
        make_inputs(model, shapes={"x": (1, 4, 512, 512)})


def test_inputs_that_fit_are_made(monkeypatch):
    monkeypatch.setenv(memory.ENV, "64M")
    feeds = make_inputs(conv_model((1, 4, 256, 256), 4, (1, 1)))
    assert feeds["x"].shape == (1, 4, 256, 256)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_refuses_a_run_whose_tensors_do_not_fit(tmp_path):
    """The feeds (8 MiB, 24 MiB with their float64 draw) fit in 40 MiB; the channel-split run's
    tensors (about 20 MiB, times memory.RUN_PEAK_FACTOR) do not: one line, exit 2, nothing
    written, the input untouched. --no-verify rewrites it."""
    source = tmp_path / "wide.onnx"
    onnx.save(conv_model((1, 512, 64, 64), 64, (1, 1)), str(source))
    before = digest(source)
    out = tmp_path / "out.onnx"
    env = {memory.ENV: "40M"}
    result = run_cli([source, "--target", "generic", "-o", out], tmp_path, subprocess=True,
                     env=env)
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "verification needs about" in lines[0] and "tensors" in lines[0]
    assert not out.exists() and digest(source) == before
    result = run_cli([source, "--target", "generic", "-o", out, "--no-verify"], tmp_path,
                     subprocess=True, env=env)
    assert result.code == 0, result.stderr
    assert out.exists() and digest(source) == before


def test_tiling_declines_beyond_its_tile_limit():
    spec = ConvSpec(name="c", op_type="Conv", in_channels=1, out_channels=1, groups=1,
                    kernel_shape=(3,), strides=(1,), dilations=(1,), pads=(1, 1),
                    input_shape=(1, 1, 100_000_000))
    plan = plan_tiles(spec, load_target({"name": "t", "conv": {"max_dim": 512}}), (1, 1))
    assert f"limit {MAX_LOWERED_TILES} per conv" in plan.reason


def test_tiling_just_within_the_limit_plans():
    spec = ConvSpec(name="c", op_type="Conv", in_channels=1, out_channels=1, groups=1,
                    kernel_shape=(1,), strides=(1,), dilations=(1,), pads=(0, 0),
                    input_shape=(1, 1, 8 * MAX_LOWERED_TILES))
    plan = plan_tiles(spec, load_target({"name": "t", "conv": {"max_dim": 8}}), (0, 0))
    assert len(plan.tiles[0]) == MAX_LOWERED_TILES


def test_cli_hundred_million_samples_on_k210_ends_with_a_reason(tmp_path):
    """Was: hours of tiling (5,883 tiles at 3M samples took 241 s), then the OOM killer."""
    source = tmp_path / "long.onnx"
    onnx.save(conv_model((1, 1, 100_000_000), 4, (3,), pads=(1, 1)), str(source))
    report = tmp_path / "report.json"
    result = run_cli([source, "--target", "k210", "-o", tmp_path / "out.onnx", "--no-verify",
                      "--report", report], tmp_path, subprocess=True, timeout=180)
    assert result.code == 3, result.stderr
    assert "tiles would be needed" in report.read_text()
