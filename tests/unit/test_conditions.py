"""The runbook condition language: safe, three-valued, with arithmetic as functions."""

from __future__ import annotations

import pytest

from agent.triage.conditions import ConditionError, compile_condition, compile_value, evaluate, evaluate_value


@pytest.mark.parametrize(("text", "feats", "expected"), [
    ("a.x > 2", {"a.x": 3}, True),
    ("a.x > 2", {"a.x": 1}, False),
    ("a.x > 2", {}, None),
    ("a.x > 2 and b.y", {"a.x": 1}, False),  # false wins over unknown
    ("a.x > 2 or b.y", {"a.x": 3}, True),  # true wins over unknown
    ("not (a.x == 'Error')", {"a.x": "Error"}, False),
    ("a.onset_ago_s <= add(b.changed_ago_s, 120)", {"a.onset_ago_s": 300, "b.changed_ago_s": 200}, True),
    ("ceil(mul(w.replicas, t.ratio)) == 6", {"w.replicas": 2, "t.ratio": 2.6}, True),
    ("x.flag", {"x.flag": True}, True),
    ("x.n > 1", {"x.n": "not-a-number"}, None),
])
def test_evaluation(text: str, feats: dict[str, object], expected: bool | None) -> None:
    assert evaluate(compile_condition(text), feats).value is expected


def test_missing_features_are_named() -> None:
    r = evaluate(compile_condition("a.x > 1 and b.y < 2"), {"a.x": 5})
    assert r.value is None and r.missing == ("b.y",)


@pytest.mark.parametrize("bad", ["a >", "a > > 2", "(a > 1", "__import__('os')", "a > 1; b", "and"])
def test_bad_conditions_fail_to_compile(bad: str) -> None:
    with pytest.raises(ConditionError):
        compile_condition(bad)


def test_values() -> None:
    assert evaluate_value(compile_value("max(1, ceil(div(w.r, 2)))"), {"w.r": 5}) == 3
    assert evaluate_value(compile_value("w.r"), {}) is None
