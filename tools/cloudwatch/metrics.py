"""CloudWatch metric reads: a period CloudWatch can actually serve, batched and paginated GetMetricData.

CloudWatch keeps 1-minute data for 15 days, 5-minute data for 63 days and 1-hour data for 455 days;
asking for a finer period than the window's start still has returns nothing. One GetMetricData call
takes at most 500 queries and returns at most 100,800 points; more comes back through NextToken.
`choose_period` and `get_metric_data` respect all of that so callers don't have to.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.cloudwatch.client import CloudWatchClient
from tools.cloudwatch.errors import CloudWatchRequestError

MAX_QUERIES_PER_CALL = 500
MAX_POINTS_PER_CALL = 100_800
HIGH_RESOLUTION_PERIODS_S = (1, 5, 10, 30)
NICE_PERIODS_S = (60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
# (data younger than, finest period kept), per CloudWatch's retention schedule.
RETENTION_TIERS: tuple[tuple[dt.timedelta, int, str], ...] = (
    (dt.timedelta(hours=3), 1, "high-resolution data (if published) is kept 3 hours"),
    (dt.timedelta(days=15), 60, "1-minute data is kept 15 days"),
    (dt.timedelta(days=63), 300, "5-minute data is kept 63 days"),
    (dt.timedelta(days=455), 3600, "1-hour data is kept 455 days"),
)


@dataclass(frozen=True)
class MetricSpec:
    """One metric and statistic to read."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...] = ()
    stat: str = "Average"
    unit: str | None = None

    def label(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dimensions)
        return f"{self.namespace}/{self.name}{{{dims}}} {self.stat}"


@dataclass(frozen=True)
class MetricSeries:
    spec: MetricSpec
    samples: list[tuple[float, float]]  # (unix seconds, value), ascending
    status: str  # Complete, PartialData, InternalError, Forbidden
    messages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PeriodChoice:
    period_s: int
    reason: str


def choose_period(start: dt.datetime, end: dt.datetime, now: dt.datetime, *, requested_s: int | None,
                  max_points: int) -> PeriodChoice:
    """The finest period CloudWatch still has for `start` that keeps each metric under `max_points`."""
    if end <= start:
        raise ValueError("the window must end after it starts")
    age = now - start
    tier = next(((p, why) for limit, p, why in RETENTION_TIERS if age <= limit), None)
    if tier is None:
        raise CloudWatchRequestError(f"the window starts {age.days} days ago; CloudWatch keeps metrics 455 days "
                                     "(15 months) at most")
    finest, why = tier
    span = (end - start).total_seconds()
    floor = math.ceil(span / max_points)
    reasons: list[str] = []
    if requested_s is not None and requested_s >= max(finest, floor) and _valid_period(requested_s, finest):
        return PeriodChoice(requested_s, "as requested")
    if requested_s is not None:
        reasons.append(f"requested {requested_s}s raised")
    candidates = [*(p for p in HIGH_RESOLUTION_PERIODS_S if finest == 1), *NICE_PERIODS_S]
    # Standard-resolution metrics only have 1-minute data: go below a minute only when asked.
    lowest = max(finest, floor, requested_s if requested_s is not None and requested_s < 60 else 60)
    period = next((p for p in candidates if p >= lowest and p % finest == 0),
                  math.ceil(lowest / 86400) * 86400)
    if finest > 60:
        reasons.append(f"the window starts {age.days} days ago and {why}")
    if floor > max(finest, 60):
        reasons.append(f"{span / 3600:.1f} h at ≤{max_points} points per metric")
    return PeriodChoice(period, "; ".join(reasons) or "finest standard period")


def _valid_period(p: int, finest: int) -> bool:
    return (p in HIGH_RESOLUTION_PERIODS_S or p % 60 == 0) and p % finest == 0


def _query(i: int, spec: MetricSpec, period_s: int) -> dict[str, Any]:
    stat: dict[str, Any] = {
        "Metric": {"Namespace": spec.namespace, "MetricName": spec.name,
                   "Dimensions": [{"Name": k, "Value": v} for k, v in spec.dimensions]},
        "Period": period_s,
        "Stat": spec.stat,
    }
    if spec.unit:
        stat["Unit"] = spec.unit
    return {"Id": f"m{i}", "MetricStat": stat, "ReturnData": True}


async def get_metric_data(client: CloudWatchClient, specs: Sequence[MetricSpec], start: dt.datetime,
                          end: dt.datetime, period_s: int, *, max_pages: int = 50,
                          on_call: Callable[[], None] | None = None) -> list[MetricSeries]:
    """Read every spec over [start, end]: ≤500 queries per call, following NextToken page by page.

    `on_call` is told of each GetMetricData call made (callers that promise a bounded number count them).
    """
    out: list[MetricSeries] = []
    window = f"from {start:%Y-%m-%dT%H:%MZ} to {end:%Y-%m-%dT%H:%MZ} (period {period_s}s)"
    for offset in range(0, len(specs), MAX_QUERIES_PER_CALL):
        batch = list(specs[offset : offset + MAX_QUERIES_PER_CALL])
        queries = [_query(i, s, period_s) for i, s in enumerate(batch)]
        samples: dict[str, list[tuple[float, float]]] = {q["Id"]: [] for q in queries}
        status: dict[str, str] = {}
        messages: dict[str, list[str]] = {q["Id"]: [] for q in queries}
        what = f"GetMetricData for {len(batch)} metric(s) starting with {batch[0].label()} {window}"
        token: str | None = None
        for _ in range(max_pages):
            kwargs: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end,
                                      "ScanBy": "TimestampAscending", "MaxDatapoints": MAX_POINTS_PER_CALL}
            if token:
                kwargs["NextToken"] = token
            if on_call is not None:
                on_call()
            page = await client.call(what, client.metrics.get_metric_data, **kwargs)
            for r in page.get("MetricDataResults", []):
                rid = r.get("Id", "")
                if rid not in samples:
                    continue
                samples[rid].extend(
                    (ts.timestamp(), float(v)) for ts, v in zip(r.get("Timestamps", []), r.get("Values", []),
                                                                 strict=False))
                status[rid] = r.get("StatusCode", "Complete")
                messages[rid].extend(f"{m.get('Code', '')}: {m.get('Value', '')}" for m in r.get("Messages", []))
            token = page.get("NextToken")
            if not token:
                break
        for q, spec in zip(queries, batch, strict=True):
            rid = q["Id"]
            pts = sorted(samples[rid])
            state = status.get(rid, "Complete")
            if token and state == "Complete":
                state = "PartialData"
            out.append(MetricSeries(spec=spec, samples=pts, status=state, messages=messages[rid]))
    return out


async def list_metrics(client: CloudWatchClient, namespace: str, name: str, dimensions: Mapping[str, str], *,
                       limit: int) -> tuple[list[tuple[tuple[str, str], ...]], bool]:
    """Dimension sets of metrics named `name` that carry at least `dimensions`; and whether more exist."""
    found: list[tuple[tuple[str, str], ...]] = []
    token: str | None = None
    what = f"ListMetrics {namespace}/{name} with {dict(dimensions)}"
    while True:
        kwargs: dict[str, Any] = {"Namespace": namespace, "MetricName": name,
                                  "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]}
        if token:
            kwargs["NextToken"] = token
        page = await client.call(what, client.metrics.list_metrics, **kwargs)
        for m in page.get("Metrics", []):
            dims = tuple(sorted((d["Name"], d["Value"]) for d in m.get("Dimensions", [])))
            if dims not in found:
                found.append(dims)
            if len(found) > limit:
                return found[:limit], True
        token = page.get("NextToken")
        if not token:
            return found, False
