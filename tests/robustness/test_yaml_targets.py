"""Hostile target YAML (issue 12, class 2): encodings, alias bombs, ``extends:`` cycles and bad
parents, NaN/inf and other impossible values. Each is exit 2 with one line naming the file or the
key path; never exit 4, nothing written."""

from __future__ import annotations

import codecs
from pathlib import Path

from tests.robustness.harness import (Case, cases_param, run_case, through_subprocess,
                                       write_model)
from tests.robustness.models import CHIP_YAML, small_model

GOOD = CHIP_YAML


def _with_yaml(files: dict[str, bytes], target: str = "t.yaml", tail=("-o", "out.onnx")):
    def setup(folder: Path) -> list:
        write_model(folder, "in.onnx", small_model())
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return ["in.onnx", "--target", target, *tail]
    return setup


def encoding_cases():
    text = GOOD
    decodable = {
        "utf8_bom": codecs.BOM_UTF8 + text.encode(),
        "utf16le_bom": codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
        "utf16be_bom": codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
        "utf32le_bom": codecs.BOM_UTF32_LE + text.encode("utf-32-le"),
        "utf32be_bom": codecs.BOM_UTF32_BE + text.encode("utf-32-be"),
        "crlf": text.replace("\n", "\r\n").encode(),
        "unicode_description": (text + "description: \u00e9t\u00e9 \u2603\n").encode(),
    }
    for name, data in decodable.items():
        yield Case(f"yaml_{name}", _with_yaml({"t.yaml": data}))
    rejected = {
        "utf16le_no_bom": (text.encode("utf-16-le"), "UTF-16"),
        "utf16be_no_bom": (text.encode("utf-16-be"), "UTF-16"),
        "latin1": ((text + "description: caf\xe9\n").encode("latin-1"), "not UTF-8"),
        "cp1252_quote": (b"name: \x93chip\x94\n", "not UTF-8"),
        "binary": (bytes(range(256)) * 4, "t.yaml"),
        "nul_in_utf8": (b"name: a\x00b\n", "t.yaml"),
        "bad_utf16_bom": (codecs.BOM_UTF16_LE + b"\x00\xd8", "t.yaml"),
        "onnx_as_yaml": (small_model().SerializeToString(), "t.yaml"),
        "gzip": (b"\x1f\x8b\x08\x00" + bytes(60), "t.yaml"),
    }
    for name, (data, needle) in rejected.items():
        yield Case(f"yaml_{name}", _with_yaml({"t.yaml": data}), expect=2, needle=needle)


def bomb_cases():
    lol = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    prev = "a"
    for i in range(9):
        lol += f"b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        prev = f"b{i}"
    yield Case("yaml_billion_laughs", _with_yaml({"t.yaml": lol.encode()}), expect=2,
               needle="alias")
    bomb_in_section = "conv: &c {max_in_channels: 16}\nverify: {atol: 0.1}\nrewrite: *c\n"
    yield Case("yaml_alias_in_section", _with_yaml({"t.yaml": bomb_in_section.encode()}),
               expect=2, needle="rewrite")
    yield Case("yaml_alias_scalar", _with_yaml({"t.yaml": b"name: &n chip\ndescription: *n\n"}),
               expect=2, needle="description")
    deep = ("conv: " + "[" * 5000 + "]" * 5000 + "\n").encode()
    yield Case("yaml_deep_nesting", _with_yaml({"t.yaml": deep}), expect=2, needle="t.yaml")
    deep_map = ("conv:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300))).encode()
    yield Case("yaml_deep_mapping", _with_yaml({"t.yaml": deep_map}), expect=2, needle="conv.k0")
    yield Case("yaml_huge_int", _with_yaml({"t.yaml": b"conv: {max_in_channels: " + b"9" * 5000
                                                      + b"}\n"}), expect=(0, 2))
    yield Case("yaml_python_tag", _with_yaml({"t.yaml": b"name: !!python/object/apply:os.system"
                                                        b" [echo hi]\n"}), expect=2,
               needle="t.yaml")
    yield Case("yaml_multi_doc", _with_yaml({"t.yaml": b"name: a\n---\nname: b\n"}), expect=2,
               needle="t.yaml")
    yield Case("yaml_empty", _with_yaml({"t.yaml": b""}))
    yield Case("yaml_list_top", _with_yaml({"t.yaml": b"- 1\n- 2\n"}), expect=2, needle="mapping")
    yield Case("yaml_complex_key", _with_yaml({"t.yaml": b"? [a, b]\n: 1\n"}), expect=2,
               needle="t.yaml")
    yield Case("yaml_int_key", _with_yaml({"t.yaml": b"1: 2\n"}), expect=2, needle="unknown key")
    yield Case("yaml_conv_null", _with_yaml({"t.yaml": b"conv:\n"}))


def extends_cases():
    yield Case("extends_self", _with_yaml({"t.yaml": b"extends: t.yaml\n"}), expect=2,
               needle="cycle")
    yield Case("extends_self_dotslash", _with_yaml({"t.yaml": b"extends: ./t.yaml\n"}), expect=2,
               needle="cycle")
    yield Case("extends_cycle_two", _with_yaml({"t.yaml": b"extends: sub/u.yaml\n",
                                                "sub/u.yaml": b"extends: ../t.yaml\n"}),
               expect=2, needle="cycle")
    yield Case("extends_cycle_three", _with_yaml({"t.yaml": b"extends: a/u.yaml\n",
                                                  "a/u.yaml": b"extends: ../b/v.yaml\n",
                                                  "b/v.yaml": b"extends: ../a/../t.yaml\n"}),
               expect=2, needle="cycle")

    def symlink_cycle(folder):
        argv = _with_yaml({"t.yaml": b"extends: link.yaml\n"})(folder)
        (folder / "link.yaml").symlink_to("t.yaml")
        return argv
    yield Case("extends_cycle_symlink", symlink_cycle, expect=2, needle="cycle")
    yield Case("extends_missing", _with_yaml({"t.yaml": b"extends: nope.yaml\n"}), expect=2,
               needle="extends")
    yield Case("extends_missing_name", _with_yaml({"t.yaml": b"extends: nosuchpreset\n"}),
               expect=2, needle="extends")
    yield Case("extends_binary", _with_yaml({"t.yaml": b"extends: m.onnx\n",
                                             "m.onnx": small_model().SerializeToString()}),
               expect=2, needle="m.onnx")
    yield Case("extends_directory", _with_yaml({"t.yaml": b"extends: sub\n",
                                                "sub/x.yaml": GOOD.encode()}),
               expect=2, needle="sub")
    yield Case("extends_list", _with_yaml({"t.yaml": b"extends: [generic]\n"}), expect=2,
               needle="extends")
    yield Case("extends_nul", _with_yaml({"t.yaml": b"extends: \"a\\0b\"\n"}), expect=2,
               needle="extends")
    yield Case("extends_bad_parent_value", _with_yaml({
        "t.yaml": b"extends: p.yaml\n", "p.yaml": b"conv: {max_stride: -1}\n"}), expect=2,
        needle="conv.max_stride")
    yield Case("extends_parent_utf16", _with_yaml({
        "t.yaml": b"extends: p.yaml\n", "p.yaml": GOOD.encode("utf-16-le")}), expect=2,
        needle="p.yaml")
    yield Case("extends_preset_chain", _with_yaml({"t.yaml": b"extends: sub/p.yaml\n",
                                                   "sub/p.yaml": b"extends: k210\n"}))
    yield Case("target_is_directory", _with_yaml({"d/x.yaml": GOOD.encode()}, target="d"),
               expect=2, needle="d")


def value_cases():
    bad = {
        "atol_nan": ("verify: {atol: .nan}", "verify.atol"),
        "rtol_nan": ("verify: {rtol: .NaN}", "verify.rtol"),
        "atol_inf": ("verify: {atol: .inf}", "verify.atol"),
        "rtol_neg_inf": ("verify: {rtol: -.inf}", "verify.rtol"),
        "atol_negative": ("verify: {atol: -1.0e-5}", "verify.atol"),
        "atol_string": ("verify: {atol: small}", "verify.atol"),
        "atol_bool": ("verify: {atol: true}", "verify.atol"),
        "channels_float": ("conv: {max_in_channels: 16.0}", "conv.max_in_channels"),
        "channels_inf": ("conv: {max_in_channels: .inf}", "conv.max_in_channels"),
        "channels_nan": ("conv: {max_out_channels: .nan}", "conv.max_out_channels"),
        "channels_zero": ("conv: {max_in_channels: 0}", "conv.max_in_channels"),
        "stride_string": ("conv: {max_stride: two}", "conv.max_stride"),
        "kernel_nan": ("conv: {kernel_shapes: [[.nan, 1]]}", "conv.kernel_shapes[0][0]"),
        "kernel_empty": ("conv: {kernel_shapes: [[]]}", "conv.kernel_shapes[0]"),
        "height_reversed": ("conv: {input_height: [9, 3]}", "conv.input_height"),
        "groups_unknown": ("conv: {groups: [weird]}", "conv.groups[0]"),
        "ops_number": ("ops: [1]", "ops[0]"),
        "rank_nan": ("max_tensor_rank: .nan", "max_tensor_rank"),
        "section_list": ("verify: [1, 2]", "verify"),
        "unknown_section": ("convv: {}", "convv"),
        "name_number": ("name: 3", "name"),
        # a key with a newline in it (found by the YAML fuzzer): still one stderr line
        "key_with_newline": ('verify: {"ato\\nle-5": 1}', "ato\\nle-5"),
        "key_with_control": ('conv: {"max\\rx": 1}', "max\\rx"),
    }
    for name, (text, needle) in bad.items():
        yield Case(f"value_{name}", _with_yaml({"t.yaml": (text + "\n").encode()}), expect=2,
                   needle=needle)
    yield Case("value_atol_zero_ok", _with_yaml({"t.yaml": b"verify: {atol: 0, rtol: 0}\n"}))


ALL = [*encoding_cases(), *bomb_cases(), *extends_cases(), *value_cases()]
ALL += through_subprocess(ALL, 20)


@cases_param(ALL)
def test_yaml_case(case, tmp_path):
    run_case(case, tmp_path)
