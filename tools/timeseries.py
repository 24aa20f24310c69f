"""Series arithmetic for evidence: summaries of a time series that a model or a human can read.

Prometheus and CloudWatch tools both hand their series here. Everything is a pure function over
`(unix seconds, value)` samples: no I/O, no knowledge of where the numbers came from. Non-finite
values (NaN and ±Inf — what Prometheus returns for 0/0 or a histogram with no observations) are
counted and left out of every statistic, never averaged in.

What a summary says, and why:
- min / max / mean / p50 / p95 / last: the shape of the window in six numbers.
- trend: least-squares slope per hour and a direction, so "rising" is measured, not eyeballed.
- change point: the single split that best explains the series as two flat segments (the largest
  mean shift), with the means before and after. Reported only when the shift stands out from the
  noise and is a sizeable fraction of the level, so a flat noisy series has none.
- onset: when the trouble started — the first sample past a threshold if one is given, else the
  change point.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Sample = tuple[float, float]  # (unix seconds, value)

# A change point must stand this many standard errors clear of the noise, and shift the level by at
# least this fraction of it: a flat, noisy series must not report one (the maximum over all splits of
# a t statistic on pure noise sits around 3-4 for a few hundred points).
_MIN_T_SCORE = 6.0
_MIN_RELATIVE_SHIFT = 0.1
# A trend is "flat" when the fitted change over the window is below this share of the series' scale.
_FLAT_SHARE = 0.05


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Direction(enum.StrEnum):
    """Which way a series moves over the window."""

    RISING = "rising"
    FALLING = "falling"
    FLAT = "flat"


class Threshold(_Frozen):
    """A level whose first crossing marks the onset of trouble."""

    value: float = Field(description="The level, in the series' own unit.")
    side: Literal["above", "below"] = Field(
        default="above",
        description="above: trouble is above the value (latency, errors); below: under it (hit ratio, free memory).",
    )


class Trend(_Frozen):
    slope_per_hour: float = Field(description="Least-squares slope, in the series' unit per hour.")
    change_over_window: float = Field(description="slope × window length: how much the fit moves end to end.")
    direction: Direction


class ChangePoint(_Frozen):
    at: dt.datetime = Field(description="First sample of the new level.")
    before_mean: float
    after_mean: float
    shift: float = Field(description="after_mean − before_mean.")
    ratio: float | None = Field(description="after_mean / before_mean; None when before_mean is 0.")
    score: float = Field(description="Shift in standard errors of the segment means (higher = clearer).")


class OnsetKind(enum.StrEnum):
    THRESHOLD = "threshold"
    CHANGE_POINT = "change_point"


class Onset(_Frozen):
    at: dt.datetime
    kind: OnsetKind
    value: float = Field(description="The series' value at the onset sample.")
    note: str = ""


class RecentShift(_Frozen):
    """The run of samples, ending at the last one, that sits far from the series' usual level.

    A shift of the last few samples is too short for the change-point test (it needs a minimum segment
    on each side), yet it is what an alert that just fired is about.
    """

    at: dt.datetime = Field(description="The first sample of the run.")
    usual: float = Field(description="Median of the samples before the run: the series' usual level.")
    level: float = Field(description="Mean of the run.")
    samples: int


class SeriesSummary(_Frozen):
    points: int = Field(description="Finite samples summarized.")
    non_finite: int = Field(default=0, description="NaN/±Inf samples left out (0/0, empty histograms).")
    first_at: dt.datetime | None = None
    last_at: dt.datetime | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    last: float | None = Field(default=None, description="The last finite value.")
    trend: Trend | None = None
    change_point: ChangePoint | None = None
    onset: Onset | None = None
    threshold_breached_share: float | None = Field(
        default=None, description="Share of finite samples past the threshold (0-1), when one was given."
    )
    recent_shift: RecentShift | None = None


class Point(_Frozen):
    at: dt.datetime
    value: float | None = Field(description="Mean of the bucket's finite values; None if it had none.")


def to_datetime(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of already sorted, non-empty values."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples: Sequence[Sample], threshold: Threshold | None = None) -> SeriesSummary:
    """Summarize one series; samples must be in ascending time order."""
    finite = [(t, v) for t, v in samples if math.isfinite(v)]
    non_finite = len(samples) - len(finite)
    if not finite:
        return SeriesSummary(points=0, non_finite=non_finite)
    values = [v for _, v in finite]
    ordered = sorted(values)
    mean = math.fsum(values) / len(values)
    change = change_point(finite)
    onset: Onset | None = None
    breached_share: float | None = None
    if threshold is not None:
        breached = [_past(v, threshold) for v in values]
        breached_share = round(sum(breached) / len(breached), 4)
        onset = threshold_onset(finite, threshold)
    elif change is not None:
        onset = Onset(at=change.at, kind=OnsetKind.CHANGE_POINT, value=change.after_mean,
                      note=f"level moved from {_fmt(change.before_mean)} to {_fmt(change.after_mean)}")
    return SeriesSummary(
        points=len(finite),
        non_finite=non_finite,
        first_at=to_datetime(finite[0][0]),
        last_at=to_datetime(finite[-1][0]),
        min=ordered[0],
        max=ordered[-1],
        mean=mean,
        p50=percentile(ordered, 0.5),
        p95=percentile(ordered, 0.95),
        last=values[-1],
        trend=trend(finite, mean=mean, spread=ordered[-1] - ordered[0]),
        change_point=change,
        onset=onset,
        threshold_breached_share=breached_share,
        recent_shift=recent_shift(finite),
    )


def trend(finite: Sequence[Sample], *, mean: float, spread: float) -> Trend | None:
    """Least-squares slope per hour; None with fewer than two samples or no time span."""
    if len(finite) < 2:
        return None
    hours = [(t - finite[0][0]) / 3600.0 for t, _ in finite]
    span = hours[-1]
    if span <= 0:
        return None
    h_mean = math.fsum(hours) / len(hours)
    sxx = math.fsum((h - h_mean) ** 2 for h in hours)
    sxy = math.fsum((h - h_mean) * (v - mean) for h, (_, v) in zip(hours, finite, strict=True))
    slope = sxy / sxx if sxx > 0 else 0.0
    change = slope * span
    scale = max(abs(mean), spread, 1e-12)
    if abs(change) < _FLAT_SHARE * scale:
        direction = Direction.FLAT
    else:
        direction = Direction.RISING if change > 0 else Direction.FALLING
    return Trend(slope_per_hour=slope, change_over_window=change, direction=direction)


def change_point(finite: Sequence[Sample]) -> ChangePoint | None:
    """Find the largest mean shift: the split maximizing n_l·n_r/n·(mean_r − mean_l)².

    That is the Gaussian likelihood-ratio split of binary segmentation. It is reported only when the
    shift is significant (see `_MIN_T_SCORE`, `_MIN_RELATIVE_SHIFT`).
    """
    n = len(finite)
    min_seg = max(2, n // 20)
    if n < 2 * min_seg or n < 6:
        return None
    values = [v for _, v in finite]
    prefix = [0.0]
    prefix_sq = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
        prefix_sq.append(prefix_sq[-1] + v * v)
    total = prefix[-1]
    best_k, best_gain = -1, 0.0
    for k in range(min_seg, n - min_seg + 1):
        left_mean = prefix[k] / k
        right_mean = (total - prefix[k]) / (n - k)
        gain = k * (n - k) / n * (right_mean - left_mean) ** 2
        if gain > best_gain:
            best_k, best_gain = k, gain
    if best_k < 0:
        return None
    k = best_k
    before = math.fsum(values[:k]) / k
    after = math.fsum(values[k:]) / (n - k)
    shift = after - before
    ss_left = math.fsum((v - before) ** 2 for v in values[:k])
    ss_right = math.fsum((v - after) ** 2 for v in values[k:])
    pooled_var = (ss_left + ss_right) / max(n - 2, 1)
    stderr = math.sqrt(pooled_var * (1 / k + 1 / (n - k)))
    score = abs(shift) / stderr if stderr > 0 else math.inf
    level = max(abs(before), abs(after))
    if shift == 0 or score < _MIN_T_SCORE or abs(shift) < _MIN_RELATIVE_SHIFT * level:
        return None
    return ChangePoint(
        at=to_datetime(finite[k][0]),
        before_mean=before,
        after_mean=after,
        shift=shift,
        ratio=after / before if before != 0 else None,
        score=min(score, 1e9),
    )


_AWAY = 3.0  # a sample is away from the usual level beyond this many robust spreads
_AWAY_FLOOR = 0.2  # ... and never closer than this share of the level (noise-free series have no spread)


def recent_shift(finite: Sequence[Sample]) -> RecentShift | None:
    """The run of samples at the end that sits away from the window's median, on one side of it.

    The median and the median absolute deviation are robust to an excursion that covers less than half
    the window, so the usual level is not dragged towards the excursion itself. None when the last
    sample is near the usual level, or when the run covers half the window or more (then there is no
    usual level before it to speak of).
    """
    n = len(finite)
    if n < 8:
        return None
    values = [v for _, v in finite]
    med = percentile(sorted(values), 0.5)
    mad = percentile(sorted(abs(v - med) for v in values), 0.5)
    spread = max(1.4826 * mad, _AWAY_FLOOR * abs(med), 1e-12)
    side = 1.0 if values[-1] > med else -1.0

    def away(v: float) -> bool:
        return side * (v - med) > _AWAY * spread

    if not away(values[-1]):
        return None
    k = n - 1
    while k > 0 and away(values[k - 1]):
        k -= 1
    if k < n // 2:
        return None
    run = values[k:]
    return RecentShift(at=to_datetime(finite[k][0]), usual=percentile(sorted(values[:k]), 0.5),
                       level=math.fsum(run) / len(run), samples=len(run))


def threshold_onset(finite: Sequence[Sample], threshold: Threshold) -> Onset | None:
    """The first sample past the threshold; None if the series never gets there."""
    for i, (t, v) in enumerate(finite):
        if _past(v, threshold):
            note = ""
            if i == 0:
                note = "already past the threshold when the window starts; the real onset is earlier"
            return Onset(at=to_datetime(t), kind=OnsetKind.THRESHOLD, value=v, note=note)
    return None


def downsample(samples: Sequence[Sample], max_points: int) -> list[Point]:
    """Reduce a series to at most `max_points` points: equal-width time buckets, each its finite mean."""
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    if len(samples) <= max_points:
        return [Point(at=to_datetime(t), value=v if math.isfinite(v) else None) for t, v in samples]
    start, end = samples[0][0], samples[-1][0]
    width = (end - start) / max_points or 1.0
    buckets: list[list[float]] = [[] for _ in range(max_points)]
    starts = [start + i * width for i in range(max_points)]
    for t, v in samples:
        i = min(int((t - start) / width), max_points - 1)
        if math.isfinite(v):
            buckets[i].append(v)
    return [Point(at=to_datetime(s), value=(math.fsum(b) / len(b)) if b else None)
            for s, b in zip(starts, buckets, strict=True)]


def magnitude(samples: Sequence[Sample]) -> float:
    """How large a series is, for ranking: its largest finite absolute value (−1 if it has none)."""
    return max((abs(v) for _, v in samples if math.isfinite(v)), default=-1.0)


def _past(value: float, threshold: Threshold) -> bool:
    if threshold.side == "below":
        return value < threshold.value
    return value > threshold.value


def _fmt(x: float) -> str:
    return f"{x:.4g}"
