"""CloudWatch read tools: metric summaries, log-event search, Logs Insights queries.

Each tool is `(CloudWatchClient, params) -> result`. Metric results are summarized like Prometheus
ones (`tools.timeseries`); log results are bounded and their text is marked untrusted.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.base import Risk, ToolInput, ToolResult, ToolSpec, UntrustedStr, UtcDatetime
from tools.cloudwatch import logs, metrics
from tools.cloudwatch.client import CloudWatchClient
from tools.cloudwatch.errors import CloudWatchRequestError
from tools.timeseries import Point, SeriesSummary, Threshold, downsample, magnitude, summarize, to_datetime

TOOLSET_METRICS = "cloudwatch/metrics"
TOOLSET_LOGS = "cloudwatch/logs"
CLIENT = "cloudwatch"
MAX_LOOKBACK_S = 63 * 86400
_MESSAGE_CHARS = 500
_VALUE_CHARS = 300
_STAT = (r"^(SampleCount|Average|Sum|Minimum|Maximum|IQM|p\d{1,2}(\.\d{1,2})?|"
         r"(tm|wm|tc|ts)\d{1,2}(\.\d{1,2})?|(TM|WM|TC|TS|PR)\(.{1,40}\))$")
_LOG_GROUP = r"^[\.\-_/#A-Za-z0-9]{1,512}$"


def _window(lookback_s: int, start: dt.datetime | None, end: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    end = end or dt.datetime.now(dt.UTC)
    start = start or end - dt.timedelta(seconds=lookback_s)
    if end <= start:
        raise CloudWatchRequestError(f"the window start {start} is not before its end {end}")
    return start, end


# --- cloudwatch_get_metric_data ----------------------------------------------------------------------

class GetMetricDataInput(ToolInput):
    namespace: str = Field(min_length=1, max_length=255,
                           description="Metric namespace, e.g. ContainerInsights or AWS/EC2.")
    metric_name: str = Field(min_length=1, max_length=255,
                             description="Metric name, e.g. node_gpu_utilization or container_gpu_utilization.")
    dimensions: dict[str, str] = Field(default_factory=dict, max_length=30,
                                       description="Dimension name → value, e.g. {\"ClusterName\": \"prod\"}.")
    discover: bool = Field(default=False,
                           description="Also read every metric of this name that has these dimensions plus others "
                                       "(e.g. one per node or pod), found with ListMetrics.")
    max_metrics: int = Field(default=20, ge=1, le=100, description="Most metrics to read when discovering.")
    stat: str = Field(default="Average", pattern=_STAT,
                      description="Statistic: Average, Sum, Minimum, Maximum, SampleCount, or a percentile like p95.")
    lookback_s: int = Field(default=3600, ge=60, le=MAX_LOOKBACK_S,
                            description="Window length in seconds, ending at `end`. Ignored when `start` is given.")
    start: UtcDatetime | None = Field(default=None, description="Window start (RFC 3339 or unix seconds).")
    end: UtcDatetime | None = Field(default=None, description="Window end; default now.")
    period_s: int | None = Field(default=None, ge=1, le=86400,
                                 description="Period in seconds (multiple of 60); raised to what CloudWatch retains "
                                             "for the window and to bound points.")
    threshold: float | None = Field(default=None, description="A level marking trouble; onset = first sample past it.")
    threshold_side: Literal["above", "below"] = Field(
        default="above", description="'above' when higher is worse (utilization, errors), 'below' when lower is worse.")
    include_points: bool = Field(default=False, description="Also return reduced points per metric.")
    points: int = Field(default=30, ge=2, le=200, description="Reduced points per metric, if included.")


class CloudWatchSeries(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dimensions: dict[str, UntrustedStr]
    status: str = Field(description="Complete, or PartialData / InternalError / Forbidden from CloudWatch.")
    summary: SeriesSummary
    points: list[Point] | None = None
    messages: list[str] = Field(default_factory=list)


class CloudWatchMetricDataResult(ToolResult):
    namespace: str
    metric_name: str
    stat: str
    start: dt.datetime
    end: dt.datetime
    period_s: int
    period_reason: str
    metrics_total: int = Field(description="Metrics read (after discovery).")
    more_available: bool = Field(description="Discovery found more metrics than max_metrics; only those were read.")
    series: list[CloudWatchSeries]
    notes: list[str] = Field(default_factory=list)


async def get_metric_data(client: CloudWatchClient, params: GetMetricDataInput) -> CloudWatchMetricDataResult:
    start, end = _window(params.lookback_s, params.start, params.end)
    now = dt.datetime.now(dt.UTC)
    choice = metrics.choose_period(start, end, max(now, end), requested_s=params.period_s,
                                   max_points=client.settings.max_points)
    base = tuple(sorted(params.dimensions.items()))
    notes: list[str] = []
    dim_sets = [base]
    more = False
    if params.discover:
        dim_sets, more = await metrics.list_metrics(client, params.namespace, params.metric_name, params.dimensions,
                                                    limit=params.max_metrics)
        if more:
            notes.append(f"more than {params.max_metrics} metrics match; read the first {params.max_metrics} — "
                         "narrow the dimensions")
        if not dim_sets:
            notes.append("ListMetrics found no metric with these dimensions in the last two weeks")
    specs = [metrics.MetricSpec(params.namespace, params.metric_name, dims, params.stat) for dims in dim_sets]
    read = await metrics.get_metric_data(client, specs, start, end, choice.period_s) if specs else []
    read.sort(key=lambda s: magnitude(s.samples), reverse=True)
    threshold = Threshold(value=params.threshold, side=params.threshold_side) if params.threshold is not None else None
    series = [
        CloudWatchSeries(
            dimensions=dict(s.spec.dimensions), status=s.status, messages=s.messages,
            summary=summarize(s.samples, threshold),
            points=downsample(s.samples, params.points) if params.include_points and s.samples else None,
        )
        for s in read
    ]
    if any(s.summary.points == 0 for s in series):
        notes.append("some metrics returned no datapoints in the window (not published, wrong dimensions, or a "
                     "period finer than CloudWatch keeps); absence is not health")
    return CloudWatchMetricDataResult(
        namespace=params.namespace, metric_name=params.metric_name, stat=params.stat, start=start, end=end,
        period_s=choice.period_s, period_reason=choice.reason, metrics_total=len(series),
        more_available=more, series=series, notes=notes,
    )


# --- cloudwatch_filter_log_events --------------------------------------------------------------------

class FilterLogEventsInput(ToolInput):
    log_group: str = Field(pattern=_LOG_GROUP,
                           description="Log group name, e.g. /aws/containerinsights/prod/application.")
    filter_pattern: str = Field(default="", max_length=1024,
                                description="CloudWatch filter pattern, e.g. '\"CUDA out of memory\"' for an exact "
                                            "phrase, '?ERROR ?Exception' for either term; empty matches all.")
    stream_prefix: str | None = Field(default=None, max_length=512,
                                      description="Only log streams whose name starts with this.")
    lookback_s: int = Field(default=3600, ge=60, le=14 * 86400,
                            description="Window length in seconds, ending at `end`. Ignored when `start` is given.")
    start: UtcDatetime | None = Field(default=None, description="Window start (RFC 3339 or unix seconds).")
    end: UtcDatetime | None = Field(default=None, description="Window end; default now.")
    limit: int = Field(default=20, ge=1, le=100, description="Most events to return (newest first); all are counted.")


class LogEventOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: dt.datetime
    stream: UntrustedStr
    message: UntrustedStr = Field(description="The log line (untrusted text, truncated).")


class CloudWatchLogEventsResult(ToolResult):
    log_group: str
    filter_pattern: str
    start: dt.datetime
    end: dt.datetime
    matches: int = Field(description="Matching events counted (up to the scan cap).")
    complete: bool = Field(description="False when the search stopped at a cap: there may be more matches.")
    first_match_at: dt.datetime | None = None
    last_match_at: dt.datetime | None = None
    events: list[LogEventOut]
    notes: list[str] = Field(default_factory=list)


async def filter_log_events(client: CloudWatchClient, params: FilterLogEventsInput) -> CloudWatchLogEventsResult:
    start, end = _window(params.lookback_s, params.start, params.end)
    found = await logs.filter_log_events(client, log_group=params.log_group, filter_pattern=params.filter_pattern,
                                         start=start, end=end, stream_prefix=params.stream_prefix, keep=params.limit)
    notes = []
    if not found.complete:
        notes.append(f"stopped after {found.matches} matches / {found.pages} pages; narrow the window or pattern "
                     "for an exact count")
    return CloudWatchLogEventsResult(
        log_group=params.log_group, filter_pattern=params.filter_pattern, start=start, end=end,
        matches=found.matches, complete=found.complete,
        first_match_at=to_datetime(found.first_at) if found.first_at is not None else None,
        last_match_at=to_datetime(found.last_at) if found.last_at is not None else None,
        events=[LogEventOut(at=to_datetime(e.at), stream=e.stream, message=_truncate(e.message, _MESSAGE_CHARS))
                for e in found.events],
        notes=notes,
    )


# --- cloudwatch_logs_insights_query ------------------------------------------------------------------

class InsightsQueryInput(ToolInput):
    log_groups: list[str] = Field(min_length=1, max_length=10, description="Log group names to query.")
    query: str = Field(min_length=1, max_length=10_000,
                       description="Logs Insights query, e.g. 'fields @timestamp, @message | filter @message like "
                                   "/CUDA out of memory/ | sort @timestamp desc | limit 20'.")
    lookback_s: int = Field(default=3600, ge=60, le=14 * 86400,
                            description="Window length in seconds, ending at `end`. Ignored when `start` is given.")
    start: UtcDatetime | None = Field(default=None, description="Window start (RFC 3339 or unix seconds).")
    end: UtcDatetime | None = Field(default=None, description="Window end; default now.")
    limit: int = Field(default=100, ge=1, le=1000, description="Most rows to return.")


class CloudWatchInsightsResult(ToolResult):
    query_id: str
    status: str
    start: dt.datetime
    end: dt.datetime
    rows: list[dict[str, UntrustedStr]] = Field(description="Result rows, field → value (untrusted, truncated).")
    records_matched: float | None = None
    records_scanned: float | None = None
    bytes_scanned: float | None = None


async def logs_insights_query(client: CloudWatchClient, params: InsightsQueryInput) -> CloudWatchInsightsResult:
    for group in params.log_groups:
        if not _valid_log_group(group):
            raise CloudWatchRequestError(f"invalid log group name {group!r}")
    start, end = _window(params.lookback_s, params.start, params.end)
    answer = await logs.insights_query(client, log_groups=params.log_groups, query=params.query, start=start,
                                       end=end, limit=params.limit)
    rows = [{k: _truncate(v, _VALUE_CHARS) for k, v in row.items()} for row in answer.rows[: params.limit]]
    st = answer.statistics
    return CloudWatchInsightsResult(
        query_id=answer.query_id, status=answer.status, start=start, end=end, rows=rows,
        records_matched=st.get("recordsMatched"), records_scanned=st.get("recordsScanned"),
        bytes_scanned=st.get("bytesScanned"),
    )


def _valid_log_group(name: str) -> bool:
    return re.match(_LOG_GROUP, name) is not None


def _truncate(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


TOOLS: list[ToolSpec[Any, Any]] = [
    ToolSpec(
        name="cloudwatch_get_metric_data", toolset=TOOLSET_METRICS, risk=Risk.READ, client=CLIENT,
        description="Read a CloudWatch metric (optionally every dimension variant of it) over a window. Returns per "
                    "metric min/max/mean/p50/p95/last, trend, change point and onset. The period is chosen from "
                    "CloudWatch retention (1-min data 15 days, 5-min 63 days).",
        input=GetMetricDataInput, output=CloudWatchMetricDataResult, fn=get_metric_data,
    ),
    ToolSpec(
        name="cloudwatch_filter_log_events", toolset=TOOLSET_LOGS, risk=Risk.READ, client=CLIENT,
        description="Search a CloudWatch log group with a filter pattern. Returns how many events matched, when "
                    "the first and last were, and the newest few lines (untrusted text).",
        input=FilterLogEventsInput, output=CloudWatchLogEventsResult, fn=filter_log_events,
    ),
    ToolSpec(
        name="cloudwatch_logs_insights_query", toolset=TOOLSET_LOGS, risk=Risk.READ, client=CLIENT,
        description="Run a CloudWatch Logs Insights query (fields/filter/stats/sort/limit) over log groups and "
                    "return its rows (untrusted text). Use for counts and breakdowns a filter pattern can't give.",
        input=InsightsQueryInput, output=CloudWatchInsightsResult, fn=logs_insights_query,
    ),
]
