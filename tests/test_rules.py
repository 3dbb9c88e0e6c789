"""The rule table drives legality, --list-rules and the README's rule list; every lowering names
its rules from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import convrewrite.passes  # noqa: F401 - registers every lowering and pass with the table
from convrewrite.lowerings import LOWERINGS
from convrewrite.passes import (CONV_PASSES, GRAPH_PASSES, LOWERED_PASSES, PASSES, TIDY_PASSES,
                                GraphPass, Pass)
from convrewrite.passes import register_pass
from convrewrite.rules import (LOWERED_ORDER, LOWERING_ORDER, PATTERN_ORDER, RULES, TIDY_ORDER,
                               describe_rules, fixers, rules_named)

README = Path(__file__).parent.parent / "README.md"


def readme_rules() -> dict[str, str]:
    """The README's rule list: ``| `key` | fixed by |`` rows between its markers."""
    text = README.read_text()
    block = text[text.index("<!-- rules -->"):text.index("<!-- /rules -->")]
    return dict(re.findall(r"^\| `([\w.]+)` \| ([^|]*) \|", block, re.M))


def test_readme_lists_the_table():
    listed = readme_rules()
    assert list(listed) == [r.key for r in RULES.values()]
    for rule in RULES.values():
        assert listed[rule.key].strip() == (", ".join(fixers(rule.name)) or "no lowering yet")


def test_list_rules_has_every_rule_and_its_fixers():
    rows = {key: meaning for key, meaning, _ in describe_rules()}
    for rule in RULES.values():
        assert rule.key in rows
        for fixer in fixers(rule.name):
            assert fixer in rows[rule.key]


def test_every_lowering_is_ordered_and_fixes_known_rules():
    assert set(LOWERING_ORDER) == set(LOWERINGS) | set(CONV_PASSES)
    for cls in (*LOWERINGS.values(), *CONV_PASSES.values()):
        assert cls.fixes and cls.fixes <= set(RULES)


def test_pattern_and_tidy_passes_are_registered_in_their_order():
    """The pipeline's pattern, lowered and tidy passes are the registered ones, in the rule
    table's orders (a new pass is in the pipeline once its module exists and its name is
    ordered)."""
    graph_passes = {n for n, cls in PASSES.items() if not issubclass(cls, Pass)}
    assert graph_passes == set(PATTERN_ORDER) | set(LOWERED_ORDER) | set(TIDY_ORDER)
    assert [p.name for p in GRAPH_PASSES] == list(PATTERN_ORDER)
    assert [p.name for p in LOWERED_PASSES] == list(LOWERED_ORDER)
    assert [p.name for p in TIDY_PASSES] == list(TIDY_ORDER)
    for name in graph_passes:
        assert PASSES[name].fixes <= set(RULES)
    assert fixers("max_tensor_rank") == ["broadcast_views", "rank_reduction", "shuffle",
                                         "stack_reduction"]


def test_a_pass_outside_the_orders_fails():
    class Unordered(GraphPass):
        name = "unordered"

    with pytest.raises(KeyError, match="'unordered' is not in rules.PATTERN_ORDER, "
                                       "rules.LOWERED_ORDER or rules.TIDY_ORDER"):
        register_pass(Unordered)


def test_unknown_rule_names_fail():
    with pytest.raises(KeyError, match="max_in_chanels"):
        rules_named("max_in_chanels")
