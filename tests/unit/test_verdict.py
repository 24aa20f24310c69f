"""Verification verdicts: regressions need a practical and a statistical shift; missing data never passes."""

from __future__ import annotations

import random

from agent.change.verdict import Outcome, judge, mann_whitney_greater, overall


def test_a_clear_latency_regression_is_caught() -> None:
    rnd = random.Random(1)
    before = [0.4 + rnd.gauss(0, 0.03) for _ in range(30)]
    after = [1.6 + rnd.gauss(0, 0.2) for _ in range(30)]
    v = judge("ttft_p95", before, after)
    assert v.outcome == Outcome.REGRESSION and v.p_value is not None and v.p_value < 0.001


def test_noise_is_not_a_regression() -> None:
    rnd = random.Random(2)
    before = [0.4 + rnd.gauss(0, 0.05) for _ in range(30)]
    after = [0.41 + rnd.gauss(0, 0.05) for _ in range(30)]
    assert judge("ttft_p95", before, after).outcome == Outcome.PASS


def test_missing_or_sparse_data_is_inconclusive_never_pass() -> None:
    assert judge("errors", [0.01] * 20, []).outcome == Outcome.INCONCLUSIVE
    assert judge("errors", [0.01] * 20, [0.01, float("nan")] * 3).outcome == Outcome.INCONCLUSIVE
    assert overall([]) == Outcome.INCONCLUSIVE


def test_an_error_rate_under_the_floor_is_not_a_regression() -> None:
    before, after = [0.0001] * 20, [0.0004] * 20  # x4, but 0.04% errors is within SLO
    assert judge("errors", before, after, floor=0.01).outcome == Outcome.PASS


def test_rank_test_direction() -> None:
    assert mann_whitney_greater([5, 6, 7, 8, 9], [1, 2, 3, 4, 5]) < 0.05
    assert mann_whitney_greater([1, 2, 3, 4, 5], [5, 6, 7, 8, 9]) > 0.95


def test_a_change_applied_mid_incident_is_not_blamed_for_it() -> None:
    # A surge began during the baseline: TTFT was 0.47 s, then 5 s when the scale-out was applied, and
    # is still 5 s after it. Worse than the baseline, but not worse than where the change started.
    before = [0.47] * 16 + [5.0] * 8
    after = [5.0] * 12
    v = judge("ttft_p95", before, after, floor=1.5, min_points=6, just_before=before[-6:])
    assert v.outcome == Outcome.PASS and "already 5" in v.reason
    assert judge("ttft_p95", before, after, floor=1.5, min_points=6).outcome == Outcome.REGRESSION  # the old blind spot


def test_a_change_that_makes_a_bad_level_worse_is_still_a_regression() -> None:
    before = [0.47] * 16 + [2.0] * 8
    after = [6.0] * 12
    v = judge("ttft_p95", before, after, floor=1.5, min_points=6, just_before=before[-6:])
    assert v.outcome == Outcome.REGRESSION
    healthy_start = [0.47] * 24
    assert judge("ttft_p95", healthy_start, after, floor=1.5, min_points=6,
                 just_before=healthy_start[-6:]).outcome == Outcome.REGRESSION
