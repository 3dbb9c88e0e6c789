"""Small models and targets the robustness cases share (built with onnx.helper, seconds each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from tests.conv_cases import conv_model

CHIP_YAML = "name: chip\nconv:\n  max_in_channels: 16\n  max_out_channels: 32\n"


def wide_model() -> onnx.ModelProto:
    """64 -> 48 channels: the chip target splits it (a real rewrite, verified)."""
    return conv_model(cin=64, cout=48, spatial=(6, 6), pads=(1, 1, 1, 1))


def small_model() -> onnx.ModelProto:
    """8 -> 8 channels: legal everywhere, so the output is a byte copy of the input."""
    return conv_model(cin=8, cout=8, spatial=(6, 6), pads=(1, 1, 1, 1))


def write_chip(folder: Path, name: str = "chip.yaml", text: str = CHIP_YAML) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def write_npz(folder: Path, name: str, model: onnx.ModelProto, seed: int = 0) -> Path:
    """Real inputs for every graph input of ``model`` (float32, its static shape)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    arrays = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        arrays[vi.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    path = folder / name
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path
