"""The shipped target presets: they load, they say what their sources say, and every number is cited."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from convrewrite.target import load_target, preset_names

PRESETS = ("generic", "k210", "ethos-u55", "ethos-u65", "ethos-u85", "ethos-u55-vela3", "nvdla")
SOURCED = ("k210", "ethos-u55", "ethos-u65", "ethos-u85", "ethos-u55-vela3", "nvdla")


def _text(name: str) -> str:
    return (resources.files("convrewrite") / "targets" / f"{name}.yaml").read_text()


def _conv_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line of the top-level ``conv:`` block."""
    out, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\S", line):                  # a top-level key (or comment) ends any block
            inside = line.startswith("conv:")
            continue
        if inside:
            out.append((number, line))
    return out


def test_all_presets_are_shipped():
    assert set(PRESETS) <= set(preset_names())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_is_named_after_its_file(name):
    target = load_target(name)
    assert target.name == name
    assert target.description


@pytest.mark.parametrize("name", PRESETS)
def test_every_number_under_conv_has_a_comment(name):
    lines = _conv_lines(_text(name))
    assert lines, f"{name}: no conv: block found"
    bare = []
    for number, line in lines:
        code = line.split("#", 1)[0]
        if not code.strip():
            continue                                # blank or comment-only line
        value = code.split(":", 1)[1] if ":" in code else code
        if re.search(r"\d", value) and "#" not in line:
            bare.append(f"line {number}: {line.strip()}")
    assert not bare, f"{name}: numbers without a source comment:\n" + "\n".join(bare)


@pytest.mark.parametrize("name", SOURCED)
def test_sourced_presets_list_their_sources(name):
    target = load_target(name)
    assert target.sources
    assert all(re.match(r"https://", s) for s in target.sources)
    conv_block = "\n".join(line for _, line in _conv_lines(_text(name)))
    assert "illustrative" not in conv_block.lower()


def test_generic_numbers_are_marked_illustrative():
    text = _text("generic")
    assert "illustrative" in text.lower()
    for number, line in _conv_lines(text):
        code = line.split("#", 1)[0]
        if re.search(r"\d", code.split(":", 1)[-1]):
            assert "illustrative" in line, f"generic line {number} is not marked illustrative"


@pytest.mark.parametrize("name", PRESETS)
def test_ops_allow_the_basic_lowerings(name):
    target = load_target(name)
    for op in ("Conv", "Add", "Concat", "Split", "Pad"):
        assert target.allows_op(op), f"{name} should allow {op}"


def test_generic():
    c = load_target("generic").conv
    assert c.max_in_channels == 256
    assert c.max_out_channels == 256
    assert c.channel_align == 8
    assert c.max_kernel == 7
    assert c.max_stride == 2
    assert c.max_dilation == 1
    assert c.groups == ("regular", "depthwise", "grouped")
    assert c.transposed is True
    assert c.dtypes is None


def test_k210():
    t = load_target("k210")
    c = t.conv
    assert c.kernel_shapes == ((1, 1), (3, 3))
    assert c.max_in_channels == 1024
    assert c.max_out_channels == 1024
    assert c.input_height == (4, 256)
    assert c.input_width == (4, 512)
    assert c.same_pad_only is True
    assert c.max_pad == 1
    assert c.symmetric_pad is True
    assert c.max_stride == 1
    assert c.max_dilation == 1
    assert c.groups == ("regular", "depthwise")
    assert c.max_depth_multiplier == 1
    assert c.transposed is False
    assert c.spatial_ranks == (2,)
    assert c.channel_align == 4
    assert c.max_batch is None          # the runtime loops over the batch
    assert c.dtypes is None             # nncase quantizes float models itself
    for op in ("Slice", "Split", "Add", "Concat", "Pad", "Relu", "Clip", "MaxPool", "Reshape",
               "Transpose", "Gather", "DepthToSpace", "SpaceToDepth", "Mul"):
        assert t.allows_op(op), op
    assert not t.allows_op("ConvTranspose")
    # the stride-2 note the issue asks for
    assert "strided Slice" in _text("k210")


@pytest.mark.parametrize("name", ["ethos-u55", "ethos-u65", "ethos-u85"])
def test_ethos_u_on_vela5(name):
    t = load_target(name)
    c = t.conv
    assert (t.vendor.compiler, t.vendor.core) == ("vela", "regor")
    assert c.max_stride == (None if name == "ethos-u85" else 3)
    assert c.transposed_strides == (None if name == "ethos-u85" else (1, 2))
    assert c.transposed_valid_shape is True
    assert c.max_weight_sum == 127 * 65536
    assert c.max_in_channels == 65535 and c.max_out_channels is None
    assert c.max_batch is None and c.max_dim is None and c.max_dilated_kernel_height is None
    assert c.groups == ("regular", "depthwise", "grouped")
    assert c.spatial_ranks == (1, 2)
    assert t.max_tensor_rank == 4
    assert not t.allows_op("DepthToSpace") and not t.allows_op("SpaceToDepth")
    assert "[regor 5.2]" in _text(name)


def test_ethos_u55_vela3():
    t = load_target("ethos-u55-vela3")
    c = t.conv
    assert (t.vendor.accelerator_config, t.vendor.core) == ("ethos-u55-128", "legacy")
    assert c.max_stride == 3
    assert c.max_dilated_kernel_height == 64
    assert c.max_dilated_kernel_area == 4096
    assert c.max_dim == 65535
    assert c.max_batch == 1
    assert c.transposed is True
    assert c.transposed_strides == (1, 2)
    assert c.transposed_valid_shape is True
    assert c.max_weight_sum == 127 * 65536
    assert c.depth_multiplier_needs_single_input is True
    assert c.spatial_ranks == (1, 2)
    assert c.groups == ("regular", "depthwise", "grouped")
    assert c.max_dilation is None
    assert t.max_tensor_rank == 4
    assert c.channel_align == 16
    assert c.max_pad is None
    assert c.dtypes is None
    assert t.allows_op("ConvTranspose") and t.allows_op("Slice")


def test_nvdla():
    t = load_target("nvdla")
    c = t.conv
    assert c.max_in_channels == 8192
    assert c.max_out_channels == 8192
    assert c.channel_align == 16
    assert c.max_kernel == 32
    assert c.max_stride == 8
    assert c.max_dilation == 32
    assert c.max_pad == 31
    assert c.symmetric_pad is False
    assert c.groups == ("regular",)
    assert c.transposed is False
    assert c.spatial_ranks == (2,)
    assert c.input_height == (1, 8192)
    assert c.input_width == (1, 8192)
    assert c.max_batch == 32
    assert c.dtypes is None
    assert not t.allows_op("Slice")       # ONNC's NVDLA backend has no Slice emitter


@pytest.mark.parametrize("name", PRESETS)
def test_verify_left_to_defaults(name):
    v = load_target(name).verify
    assert v.rtol is None and v.atol is None


@pytest.mark.parametrize("name", SOURCED)
def test_extending_a_preset_keeps_its_sources(name, tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {name}\nname: child\nconv:\n  max_in_channels: 64\n")
    t = load_target(str(child))
    assert t.name == "child"
    assert t.conv.max_in_channels == 64
    assert set(load_target(name).sources) <= set(t.sources)
