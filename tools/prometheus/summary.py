"""Turn Prometheus answers into what a model reads: the largest series, each summarized.

Raw matrices are never handed to a model: a range query becomes at most `max_series` series (largest
first, the rest counted as dropped), each with a `SeriesSummary` and, on request, a handful of
reduced points. Label values are untrusted text (anyone who can label a pod writes them).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.base import UntrustedStr
from tools.prometheus.client import QueryData, Series
from tools.timeseries import Point, SeriesSummary, Threshold, downsample, magnitude, summarize, to_datetime


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeriesResult(_Out):
    labels: dict[str, UntrustedStr] = Field(description="The series' labels (untrusted text).")
    summary: SeriesSummary
    points: list[Point] | None = Field(default=None, description="Reduced points, when asked for.")


class InstantSample(_Out):
    labels: dict[str, UntrustedStr] = Field(description="The series' labels (untrusted text).")
    value: float | None = Field(description="The value; None when it is NaN or ±Inf (see non_finite).")
    non_finite: Literal["NaN", "+Inf", "-Inf"] | None = None
    at: dt.datetime


def top_series(series: list[Series], max_series: int) -> tuple[list[Series], int]:
    """Keep the `max_series` largest series (by largest absolute finite value); return them and how many went."""
    ranked = sorted(series, key=lambda s: magnitude(s.samples), reverse=True)
    kept = ranked[:max_series]
    return kept, len(series) - len(kept)


def range_results(data: QueryData, *, max_series: int, threshold: Threshold | None, points: int | None,
                  exclude: Sequence[tuple[float, float]] = ()) -> tuple[list[SeriesResult], int, int]:
    """Summaries of the largest series of a matrix, how many series were dropped, and how many samples
    the summaries left out because they fall inside an `exclude` window (unix seconds, inclusive)."""
    kept, dropped = top_series(data.series, max_series)
    results: list[SeriesResult] = []
    left_out = 0
    for s in kept:
        counted = [(t, v) for t, v in s.samples if not any(a <= t <= b for a, b in exclude)]
        left_out += len(s.samples) - len(counted)
        results.append(SeriesResult(
            labels=s.labels,
            summary=summarize(counted, threshold),
            points=downsample(s.samples, points) if points else None,
        ))
    return results, dropped, left_out


def instant_samples(data: QueryData, *, max_series: int) -> tuple[list[InstantSample], int]:
    """The largest samples of a vector (or each series' last sample of a matrix), and how many were dropped."""
    kept, dropped = top_series(data.series, max_series)
    out: list[InstantSample] = []
    for s in kept:
        t, v = s.samples[-1]
        out.append(InstantSample(labels=s.labels, value=v if math.isfinite(v) else None,
                                 non_finite=_non_finite(v), at=to_datetime(t)))
    return out, dropped


def _non_finite(v: float) -> Literal["NaN", "+Inf", "-Inf"] | None:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return None
