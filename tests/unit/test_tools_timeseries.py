"""Series summaries: statistics, trend, change point and onset, with NaN/Inf left out."""

from __future__ import annotations

import math
import random

import pytest

from tools.timeseries import Direction, OnsetKind, Threshold, downsample, percentile, summarize, to_datetime

T0 = 1_700_000_000


def series(values: list[float], step: int = 60) -> list[tuple[float, float]]:
    return [(T0 + i * step, v) for i, v in enumerate(values)]


def test_statistics_leave_out_non_finite_values() -> None:
    s = summarize(series([1.0, math.nan, 3.0, math.inf, 2.0, -math.inf]))
    assert s.points == 3
    assert s.non_finite == 3
    assert (s.min, s.max, s.mean, s.p50, s.last) == (1.0, 3.0, 2.0, 2.0, 2.0)


def test_all_non_finite_series_has_no_statistics() -> None:
    s = summarize(series([math.nan, math.nan]))
    assert s.points == 0 and s.non_finite == 2 and s.mean is None and s.trend is None


def test_percentiles_interpolate() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.95) == pytest.approx(95.05)


def test_noisy_step_yields_change_point_before_and_after_means() -> None:
    rng = random.Random(7)
    values = [10 + rng.gauss(0, 0.5) for _ in range(90)] + [25 + rng.gauss(0, 0.5) for _ in range(30)]
    s = summarize(series(values))
    assert s.change_point is not None
    assert s.change_point.at == to_datetime(T0 + 90 * 60)
    assert s.change_point.before_mean == pytest.approx(10, abs=0.3)
    assert s.change_point.after_mean == pytest.approx(25, abs=0.3)
    assert s.change_point.ratio == pytest.approx(2.5, abs=0.1)
    assert s.onset is not None and s.onset.kind == OnsetKind.CHANGE_POINT
    assert s.trend is not None and s.trend.direction == Direction.RISING


def test_flat_noise_has_no_change_point_and_a_flat_trend() -> None:
    rng = random.Random(11)
    s = summarize(series([100 + rng.gauss(0, 1) for _ in range(240)]))
    assert s.change_point is None
    assert s.onset is None
    assert s.trend is not None and s.trend.direction == Direction.FLAT


def test_threshold_onset_is_the_first_sample_past_it() -> None:
    values = [0.1] * 50 + [0.5, 0.85, 0.2, 0.9, 0.95]
    s = summarize(series(values), Threshold(value=0.8))
    assert s.onset is not None
    assert s.onset.kind == OnsetKind.THRESHOLD
    assert s.onset.at == to_datetime(T0 + 51 * 60)
    assert s.threshold_breached_share == pytest.approx(3 / 55, abs=1e-4)


def test_falling_threshold_and_already_breached_window() -> None:
    s = summarize(series([0.2, 0.3, 0.9]), Threshold(value=0.5, side="below"))
    assert s.onset is not None and s.onset.at == to_datetime(T0)
    assert "earlier" in s.onset.note


def test_threshold_never_crossed_means_no_onset_even_with_a_change() -> None:
    s = summarize(series([1.0] * 30 + [2.0] * 30), Threshold(value=10))
    assert s.change_point is not None
    assert s.onset is None


def test_downsample_bounds_points_and_keeps_bucket_means() -> None:
    pts = downsample(series([float(i) for i in range(1000)], step=1), 10)
    assert len(pts) == 10
    assert pts[0].value == pytest.approx(49.5, abs=0.6)
    assert downsample(series([1.0, math.nan]), 10)[1].value is None
