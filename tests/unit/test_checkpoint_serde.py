"""The checkpoint serializer revives our own types without LangGraph's 'unregistered type' warnings and
refuses to import anything else a checkpoint row names."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from pydantic import BaseModel

from agent.app import checkpoint_serde
from agent.models import Category, Hypothesis, Severity


def test_our_types_round_trip_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    serde = checkpoint_serde()
    h = Hypothesis(id="h1", category=Category.BAD_ROLLOUT, title="new version is slower", confidence=0.8)
    value = {"h": h, "sev": Severity.CRITICAL, "at": dt.datetime(2026, 11, 23, tzinfo=dt.UTC)}
    with caplog.at_level(logging.WARNING):
        back = serde.loads_typed(serde.dumps_typed(value))
    assert back == value
    assert not [r for r in caplog.records if "unregistered" in r.getMessage() or "Blocked" in r.getMessage()]


class Planted(BaseModel):
    """Stands for any importable class a tampered checkpoint row could name."""

    x: int = 1


def test_a_class_outside_the_allowlist_is_not_revived(caplog: pytest.LogCaptureFixture) -> None:
    serde = checkpoint_serde()
    with caplog.at_level(logging.WARNING):
        back = serde.loads_typed(serde.dumps_typed({"x": Planted()}))
    assert not isinstance(back.get("x"), Planted)
    assert any("Blocked" in r.getMessage() for r in caplog.records)
