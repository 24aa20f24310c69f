"""Log evidence from CloudWatch Logs: bounded FilterLogEvents searches and Logs Insights queries.

A log search is evidence, not a dump: it counts matches up to a cap, keeps only the newest few
events (messages truncated) and says whether it saw everything. An Insights query is polled until it
finishes or the timeout passes; a query that overruns is stopped, not left running (and billed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.cloudwatch.client import CloudWatchClient
from tools.cloudwatch.errors import CloudWatchError, CloudWatchRequestError, CloudWatchTimeout

_DONE = {"Complete", "Failed", "Cancelled", "Timeout", "Unknown"}


@dataclass(frozen=True)
class LogEvent:
    at: float  # unix seconds
    stream: str
    message: str


@dataclass(frozen=True)
class LogSearch:
    events: list[LogEvent]  # newest first
    matches: int
    complete: bool  # False when a cap stopped the search early
    first_at: float | None
    last_at: float | None
    pages: int


@dataclass(frozen=True)
class InsightsAnswer:
    query_id: str
    status: str
    rows: list[dict[str, str]]
    statistics: dict[str, float] = field(default_factory=dict)


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


async def filter_log_events(client: CloudWatchClient, *, log_group: str, filter_pattern: str, start: dt.datetime,
                            end: dt.datetime, stream_prefix: str | None = None, keep: int = 20) -> LogSearch:
    """Count events matching `filter_pattern` in [start, end], keeping the newest `keep`."""
    s = client.settings
    newest: collections.deque[LogEvent] = collections.deque(maxlen=keep)
    matches = 0
    first_at: float | None = None
    last_at: float | None = None
    token: str | None = None
    pages = 0
    what = (f"FilterLogEvents on {log_group} pattern {filter_pattern!r}"
            + (f" streams {stream_prefix}*" if stream_prefix else "")
            + f" from {start:%Y-%m-%dT%H:%M:%SZ} to {end:%Y-%m-%dT%H:%M:%SZ}")
    complete = False
    while pages < s.max_log_pages and matches < s.max_log_events_scanned:
        kwargs: dict[str, Any] = {"logGroupName": log_group, "startTime": _ms(start), "endTime": _ms(end),
                                  "filterPattern": filter_pattern, "limit": s.log_page_size}
        if stream_prefix:
            kwargs["logStreamNamePrefix"] = stream_prefix
        if token:
            kwargs["nextToken"] = token
        page = await client.call(what, client.logs.filter_log_events, **kwargs)
        pages += 1
        for ev in page.get("events", []):
            at = ev.get("timestamp", 0) / 1000.0
            matches += 1
            first_at = at if first_at is None else min(first_at, at)
            last_at = at if last_at is None else max(last_at, at)
            newest.append(LogEvent(at=at, stream=str(ev.get("logStreamName", "")), message=str(ev.get("message", ""))))
        token = page.get("nextToken")
        if not token:
            complete = True
            break
    events = sorted(newest, key=lambda e: e.at, reverse=True)
    return LogSearch(events=events, matches=matches, complete=complete, first_at=first_at, last_at=last_at,
                     pages=pages)


async def insights_query(client: CloudWatchClient, *, log_groups: Sequence[str], query: str, start: dt.datetime,
                         end: dt.datetime, limit: int) -> InsightsAnswer:
    """Run a Logs Insights query and wait for it (bounded by `insights_timeout_s`)."""
    s = client.settings
    what = (f"Logs Insights query {query!r} on {', '.join(log_groups)} "
            f"from {start:%Y-%m-%dT%H:%M:%SZ} to {end:%Y-%m-%dT%H:%M:%SZ}")
    started = await client.call(what, client.logs.start_query, logGroupNames=list(log_groups),
                                startTime=int(start.timestamp()), endTime=int(end.timestamp()),
                                queryString=query, limit=limit)
    query_id = started["queryId"]
    deadline = time.monotonic() + s.insights_timeout_s
    while True:
        answer = await client.call(what, client.logs.get_query_results, queryId=query_id)
        status = str(answer.get("status", "Unknown"))
        if status in _DONE:
            break
        if time.monotonic() >= deadline:
            # It may have finished meanwhile; the timeout is what the caller needs to hear.
            with contextlib.suppress(CloudWatchError):
                await client.call(what, client.logs.stop_query, queryId=query_id)
            raise CloudWatchTimeout(f"{what}: still {status} after {s.insights_timeout_s:g}s; stopped it. "
                                    "Narrow the time range or the log groups")
        await asyncio.sleep(s.insights_poll_s)
    if status != "Complete":
        raise CloudWatchRequestError(f"{what}: finished with status {status}", retryable=status == "Timeout")
    rows = [{str(c["field"]): str(c.get("value", "")) for c in row if c.get("field") != "@ptr"}
            for row in answer.get("results", [])]
    raw_stats: dict[str, object] = dict(answer.get("statistics") or {})
    stats = {k: float(v) for k, v in raw_stats.items() if isinstance(v, int | float)}
    return InsightsAnswer(query_id=query_id, status=status, rows=rows, statistics=stats)
