"""Events reduced for a model: deduplicated by reason and message, counted, newest first.

A crash loop writes the same BackOff event hundreds of times, and a scheduling failure repeats the
same message for every pending pod; a model needs each distinct story once, with how often, since
when, and on which objects. Both core/v1 events (count, first/lastTimestamp) and events.k8s.io-style
ones (series.count, eventTime) are read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field

from tools.base import UntrustedStr
from tools.k8s_read.reduction import Out, clip, parse_time

MAX_OBJECTS = 5


class EventGroup(Out):
    type: str = Field(description="Normal or Warning.")
    reason: UntrustedStr
    message: UntrustedStr
    count: int = Field(description="Occurrences across all objects.")
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    objects: list[str] = Field(description="kind/name of up to 5 objects it was reported on.")
    objects_total: int


def _times(ev: Mapping[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None, int]:
    series = ev.get("series") or {}
    created = parse_time((ev.get("metadata") or {}).get("creationTimestamp"))
    event_time = parse_time(ev.get("eventTime"))
    first = parse_time(ev.get("firstTimestamp")) or event_time or created
    last = (parse_time(ev.get("lastTimestamp")) or parse_time(series.get("lastObservedTime")) or event_time
            or created)
    count = int(ev.get("count") or series.get("count") or 1)
    return first, last, count


def group_events(events: Iterable[Mapping[str, Any]], *, since: dt.datetime | None, limit: int,
                 text_limit: int) -> tuple[list[EventGroup], int]:
    """Groups of (type, reason, message), newest first; and how many groups there were before `limit`."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for ev in events:
        first, last, count = _times(ev)
        if since is not None and last is not None and last < since:
            continue
        obj = ev.get("involvedObject") or ev.get("regarding") or {}
        key = (str(ev.get("type", "")), str(ev.get("reason", "")),
               clip(ev.get("message") or ev.get("note") or "", text_limit))
        g = groups.setdefault(key, {"count": 0, "first": first, "last": last, "objects": []})
        g["count"] += count
        if first and (g["first"] is None or first < g["first"]):
            g["first"] = first
        if last and (g["last"] is None or last > g["last"]):
            g["last"] = last
        ref = f"{obj.get('kind', '?')}/{obj.get('name', '?')}"
        if ref not in g["objects"]:
            g["objects"].append(ref)
    out = [
        EventGroup(type=t, reason=r, message=m, count=g["count"], first_seen=g["first"], last_seen=g["last"],
                   objects=g["objects"][:MAX_OBJECTS], objects_total=len(g["objects"]))
        for (t, r, m), g in groups.items()
    ]
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    out.sort(key=lambda g: (g.last_seen or epoch, g.type == "Warning"), reverse=True)
    return out[:limit], len(out)
