"""Alertmanager webhook (version 4) → incidents: validation, grouping and deduplication.

Pure functions over typed models: parsing a body either yields a complete `Notification` or raises
`IntakeError` with the reason (nothing is half-stored), and `merge` folds a notification into the
incident of its group. Alertmanager re-sends on `repeat_interval` and after restarts, so merging the
same notification twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.models import Alert, Incident, IncidentStatus, Severity

MAX_ALERTS_PER_INCIDENT = 1000  # an incident's alerts go into every report and brief; more is an attack or a bug
MAX_BODY_BYTES = 1 << 20  # Alertmanager caps groups with max_alerts; 1 MiB holds thousands of alerts
ZERO_TIME = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
# A group that fires again this soon after it resolved is the same trouble flapping (a signal hovering at
# its threshold, a fault on a timer), not a new episode: it reopens its incident, so one cause gets one
# triage and at most one change, however often the alert bounces.
FLAP_WINDOW = dt.timedelta(minutes=30)


class IntakeError(ValueError):
    """A webhook body was rejected; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _WireAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Alertmanager adds fields over time; keep what we know

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: dt.datetime
    endsAt: dt.datetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class Notification(BaseModel):
    """An Alertmanager webhook body, version 4."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    truncatedAlerts: int = 0
    alerts: list[_WireAlert] = Field(min_length=1)


def parse(body: bytes) -> Notification:
    """Validate a webhook body; raise IntakeError naming what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise IntakeError(f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}", status=413)
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise IntakeError(f"body is not JSON: {e}") from e
    except RecursionError as e:
        raise IntakeError("body is nested too deeply to be an Alertmanager notification") from e
    if not isinstance(doc, dict):
        raise IntakeError("body must be a JSON object (an Alertmanager webhook notification)")
    if doc.get("version") != "4":
        raise IntakeError(f"unsupported webhook version {doc.get('version')!r}; expected \"4\"")
    try:
        return Notification.model_validate(doc)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
        raise IntakeError(f"not an Alertmanager notification: {problems}") from e


def _fingerprint(a: _WireAlert) -> str:
    if a.fingerprint:
        return a.fingerprint
    canon = json.dumps(sorted(a.labels.items()))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def alerts_of(n: Notification) -> list[Alert]:
    out = []
    for a in n.alerts:
        ends = None if a.endsAt is None or a.endsAt <= ZERO_TIME else a.endsAt
        out.append(Alert(fingerprint=_fingerprint(a), status=a.status, labels=a.labels, annotations=a.annotations,
                         starts_at=a.startsAt, ends_at=ends, generator_url=a.generatorURL))
    return out


def incident_id(group_key: str, first_start: dt.datetime) -> str:
    """Deterministic, so two replicas receiving the same group agree on the id."""
    digest = hashlib.sha256(f"{group_key}|{first_start.isoformat()}".encode()).hexdigest()[:10]
    return f"inc-{first_start:%Y%m%d}-{digest}"


_SEVERITY_ORDER = [Severity.CRITICAL, Severity.WARNING, Severity.INFO, Severity.NONE]


def _severity(alerts: list[Alert]) -> Severity:
    found = {a.labels.get("severity", "none") for a in alerts if a.status == "firing"} or {"none"}
    for s in _SEVERITY_ORDER:
        if s.value in found:
            return s
    return Severity.WARNING


def _title(alerts: list[Alert], common: dict[str, str]) -> str:
    firing = [a for a in alerts if a.status == "firing"] or alerts
    names = sorted({a.name for a in firing})
    where = common.get("model_name") or common.get("model") or common.get("Hostname") or common.get("node") or ""
    ns = common.get("namespace")
    scope = " ".join(x for x in (f"{ns}/" if ns else "", where) if x).replace("/ ", "/")
    head = names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}"
    return f"{head} {scope}".strip()


def _common_labels(alerts: list[Alert]) -> dict[str, str]:
    if not alerts:
        return {}
    common = dict(alerts[0].labels)
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a.labels.get(k) == v}
    return common


def merge(existing: Incident | None, n: Notification, now: dt.datetime,
          max_alerts: int = MAX_ALERTS_PER_INCIDENT) -> tuple[Incident, bool]:
    """Fold a notification into its incident. Returns (incident, changed).

    `changed` is False for a pure re-send: same alerts, same statuses, nothing new to triage. An incident
    keeps at most `max_alerts` alerts (updates to those it has always apply); further new ones are
    counted in `alerts_over_cap`, not stored, so one group cannot grow without bound.
    """
    incoming = alerts_of(n)
    refired = existing is not None and existing.status == IncidentStatus.RESOLVED and n.status == "firing"
    flapping = refired and existing is not None and now - existing.updated_at <= FLAP_WINDOW
    # A group that fires again long after it resolved is a new episode: a new incident.
    if existing is None or (refired and not flapping):
        first = min(a.starts_at for a in incoming)
        kept = list({a.fingerprint: a for a in incoming}.values())
        over = max(0, len(kept) - max_alerts)
        alerts = sorted(kept[:max_alerts], key=lambda a: a.fingerprint)
        common = _common_labels(alerts)
        status = IncidentStatus.FIRING if any(a.status == "firing" for a in alerts) else IncidentStatus.RESOLVED
        return Incident(
            id=incident_id(n.groupKey, first), group_key=n.groupKey, status=status, title=_title(alerts, common),
            severity=_severity(alerts), labels=common, alerts=alerts, created_at=now, updated_at=now,
            alerts_over_cap=over,
        ), True

    by_fp = {a.fingerprint: a for a in existing.alerts}
    changed = False
    over = existing.alerts_over_cap
    for a in incoming:
        old = by_fp.get(a.fingerprint)
        if old is None and len(by_fp) >= max_alerts:
            over += 1
            continue
        if old is None or old.status != a.status or old.ends_at != a.ends_at or old.annotations != a.annotations:
            by_fp[a.fingerprint] = a
            changed = True
    alerts = sorted(by_fp.values(), key=lambda a: a.fingerprint)
    status = IncidentStatus.FIRING if any(a.status == "firing" for a in alerts) else IncidentStatus.RESOLVED
    common = _common_labels(alerts)
    updated = existing.model_copy(update={
        "alerts": alerts, "status": status, "labels": common, "severity": _severity(alerts),
        "title": _title(alerts, common), "updated_at": now if changed else existing.updated_at,
        "notifications": existing.notifications + 1, "alerts_over_cap": over,
        "reopened": existing.reopened + (1 if flapping else 0),
    })
    return updated, changed
