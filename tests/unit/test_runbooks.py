"""Runbooks are valid data: they parse, name only registered tools, stay under their risk ceiling, and
evidence shared between runbooks is the same query everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.triage.runbooks import RunbookError, load_dir, load_file, placeholders
from tools.registry import default_tools

BOOKS = load_dir()
TOOLS = {t.name: t for t in default_tools()}
CONTEXT_KEYS = {"namespace", "model_name", "deployment", "node", "pod", "gpu", "hpa", "container", "cluster",
                "alertname", "rate_window", "load_balancer", "pods", "workload"}


def test_at_least_eight_runbooks_cover_the_failure_modes() -> None:
    cats = {h.category.value for b in BOOKS for h in b.hypotheses}
    assert len(BOOKS) >= 8
    assert {"kv_cache_saturation", "gpu_oom", "bad_rollout", "gpu_hardware", "idle_gpus", "autoscaler_thrash",
            "thermal_throttling", "healthy"} <= cats


@pytest.mark.parametrize("book", BOOKS, ids=lambda b: b.id)
def test_every_tool_exists_takes_the_params_and_stays_under_the_ceiling(book) -> None:  # type: ignore[no-untyped-def]
    ceiling = book.risk_ceiling
    for q in book.evidence:
        assert q.tool in TOOLS, f"{book.id}: evidence {q.id} names unknown tool {q.tool}"
        spec = TOOLS[q.tool]
        assert spec.risk <= ceiling
        filled = {k: (v.replace("{", "").replace("}", "") if isinstance(v, str) else v) for k, v in q.params.items()}
        spec.input.model_validate(filled)  # the parameters are the tool's own
        assert placeholders(q.params) <= CONTEXT_KEYS | set(book.derive), f"{book.id}/{q.id}: unknown placeholder"


def test_shared_evidence_ids_mean_the_same_query() -> None:
    seen: dict[str, tuple[str, object]] = {}
    for b in BOOKS:
        for q in b.evidence:
            key = (q.tool, q.params)
            assert seen.setdefault(q.id, key) == key, f"evidence id {q.id} differs between runbooks"


def test_hypothesis_conditions_name_declared_evidence() -> None:
    from agent.triage.conditions import compile_condition, features_named

    for b in BOOKS:
        ids = {q.id for q in b.evidence}
        for h in b.hypotheses:
            for clause in [*h.supports, *h.against]:
                for feat in features_named(compile_condition(clause.when)):
                    assert feat.split(".")[0] in ids | {"ctx"}, f"{b.id}/{h.id}: {feat} is not gathered here"


def test_a_broken_runbook_is_reported_with_its_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.md"
    bad.write_text("---\nid: x\ntitle: t\nmatch: {}\nevidence: []\nhypotheses:\n  - id: h\n    category: nope\n"
                   "    title: t\n    supports: [{when: 'a >', says: s}]\n---\nbody\n")
    with pytest.raises(RunbookError, match=r"x\.md"):
        load_file(bad)
    bad.write_text("no front matter")
    with pytest.raises(RunbookError, match="front matter"):
        load_file(bad)


def test_the_fast_rate_window_holds_four_scrapes() -> None:
    from agent.app import fast_rate_window_s

    assert fast_rate_window_s(5) == 20  # the sandbox: a lost prefix cache shows within 20 s
    assert fast_rate_window_s(15) == 60
    assert fast_rate_window_s(1) == 20  # never shorter than 20 s, whatever the scrape
