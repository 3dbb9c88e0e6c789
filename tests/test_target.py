"""Target YAML: validation errors name the key path; extends merges; presets load by name."""

from __future__ import annotations

import pytest

from convrewrite.errors import TargetError
from convrewrite.rules import describe_rules
from convrewrite.target import load_target


@pytest.mark.parametrize("raw,message", [
    ({"conv": {"max_in_channels": -3}},
     "conv.max_in_channels: expected a positive integer, got -3"),
    ({"conv": {"max_in_channels": True}}, "conv.max_in_channels: expected a positive integer"),
    ({"conv": {"max_in_chanels": 4}}, "conv.max_in_chanels: unknown key"),
    ({"conv": {"kernel_shapes": [[1, 1], [3, "x"]]}}, "conv.kernel_shapes[1][1]: expected a positive"),
    ({"conv": {"groups": ["regular", "sparse"]}}, "conv.groups[1]: expected one of regular"),
    ({"conv": {"input_height": [300, 4]}}, "conv.input_height: expected min <= max"),
    ({"conv": {"max_pad": 1.5}}, "conv.max_pad: expected a non-negative integer"),
    ({"conv": []}, "conv: expected a mapping"),
    ({"verify": {"rtol": -1}}, "verify.rtol: expected a finite non-negative number"),
    ({"rewrite": {"accumulate": "sideways"}}, "rewrite.accumulate: expected one of chain, tree"),
    ({"ops": ["Conv", 3]}, "ops[1]: expected an ONNX operator name"),
    ({"colour": "red"}, "colour: unknown key"),
])
def test_errors_name_the_key_path(raw, message):
    with pytest.raises(TargetError) as err:
        load_target(raw)
    assert str(err.value).startswith(message)


def test_yaml_file_with_extends(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("name: base\nconv:\n  max_in_channels: 64\n  max_out_channels: 32\n"
                    "ops: [Conv, Add]\n")
    child = tmp_path / "child.yaml"
    child.write_text("name: child\nextends: base.yaml\nconv:\n  max_out_channels: 16\n")
    target = load_target(child)
    assert target.name == "child"
    assert target.conv.max_in_channels == 64 and target.conv.max_out_channels == 16
    assert target.ops == ("Conv", "Add")


def test_extends_a_preset(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("extends: k210\nname: my-k210\nconv:\n  max_in_channels: 512\n")
    target = load_target(path)
    assert target.conv.max_in_channels == 512
    assert target.conv.kernel_shapes == ((1, 1), (3, 3))      # inherited


def test_extends_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(TargetError, match="cycle"):
        load_target(tmp_path / "a.yaml")


def test_unsafe_yaml_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(TargetError, match="not valid YAML"):
        load_target(path)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(TargetError, match="unknown target 'k999'"):
        load_target("k999")
    with pytest.raises(TargetError, match="target file not found"):
        load_target(tmp_path / "nope.yaml")


def test_every_rule_is_documented():
    keys = [k for k, doc, _ in describe_rules()]
    assert "conv.max_in_channels" in keys and "verify.atol" in keys
    assert all(doc for _, doc, _ in describe_rules())
