"""Alertmanager webhook (version 4) → incidents: validation, grouping and deduplication.

Pure functions over typed models: parsing a body either yields a complete `Notification` or raises
`IntakeError` with the reason (nothing is half-stored); `fold` decides which of a notification's alerts
the store writes into the incident of its group (new ones up to the cap, changed ones), so a re-send
changes nothing; `assemble` derives what readers see (title, severity, common labels) from the alerts.
The store keeps alerts as rows and calls these inside its transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
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
# A new group whose alerts name the workload of an open incident whose current episode started within this
# long of them joins that incident (server.fold_window_s): one broken rollout pages once, however the
# receiver's route groups its alerts (Alertmanager configs often group by alertname).
FOLD_WINDOW = dt.timedelta(minutes=10)
# The labels that name a workload, in this order: the first present (with `namespace`) identifies it.
WORKLOAD_LABELS = ("deployment", "rollout", "workload", "model_name", "model")


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
    try:  # a valid body is parsed and validated in one pass by pydantic-core's JSON parser
        n = Notification.model_validate_json(body)
    except ValidationError:
        return _storable(_explain(body))
    return _storable(n)


def _storable(n: Notification) -> Notification:
    """Refuse the text no store keeps as it is: a NUL character or a lone surrogate in the values stored as
    plain text (labels and annotations are stored as JSON, which escapes both). Postgres would refuse the
    delivery at write time, SQLite would keep it; both answer 400 instead."""
    for where, text in (("groupKey", n.groupKey),
                        *((f"alerts.{i}.{k}", v) for i, a in enumerate(n.alerts)
                          for k, v in (("fingerprint", a.fingerprint), ("generatorURL", a.generatorURL)))):
        if "\x00" in text:
            raise IntakeError(f"{where} holds a NUL character")
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as e:
                raise IntakeError(f"{where} is not valid Unicode (a lone surrogate)") from e
    return n


def _explain(body: bytes) -> Notification:
    """Validate a body that failed the fast path again, to say what is wrong in words a sender can act on."""
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


def fingerprint_of(a: _WireAlert) -> str:
    """The alert's fingerprint: Alertmanager's, or one derived from its labels when the sender gave none."""
    if a.fingerprint:
        return a.fingerprint
    canon = json.dumps(sorted(a.labels.items()))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def ends_of(a: _WireAlert) -> dt.datetime | None:
    """When the alert ended; None while it fires (Alertmanager sends the zero time, or nothing)."""
    return None if a.endsAt is None or a.endsAt <= ZERO_TIME else a.endsAt


def alerts_of(n: Notification) -> list[Alert]:
    # The wire model validated every field already; validating the same values again is pure cost.
    return [Alert.model_construct(fingerprint=fingerprint_of(a), status=a.status, labels=a.labels,
                                  annotations=a.annotations, starts_at=a.startsAt, ends_at=ends_of(a),
                                  generator_url=a.generatorURL) for a in n.alerts]


def workload_of_labels(labels: Mapping[str, str]) -> str | None:
    """The workload an alert's labels name, `namespace/name`: `namespace` and the first of WORKLOAD_LABELS
    present (non-empty). None without both: a node, a pod or a cluster-wide alert names no workload."""
    ns = labels.get("namespace")
    if not ns:
        return None
    for key in WORKLOAD_LABELS:
        if name := labels.get(key):
            return f"{ns}/{name}"
    return None


def workload_of(n: Notification) -> str | None:
    """The one workload every firing alert of `n` names; None when one names none or two differ. Only a
    group with a workload joins another group's incident (`server.fold_window_s`)."""
    found = {workload_of_labels(a.labels) for a in n.alerts if a.status == "firing"}
    return found.pop() if len(found) == 1 else None


def first_firing_start(n: Notification) -> dt.datetime | None:
    """When the earliest firing alert of `n` started (None when none fires)."""
    starts = [a.startsAt for a in n.alerts if a.status == "firing"]
    return min(starts) if starts else None


def within_fold_window(episode_start: dt.datetime, start: dt.datetime, window: dt.timedelta) -> bool:
    """Whether alerts starting at `start` belong to an incident whose current episode (its latest firing
    alert) started at `episode_start`: they started within `window` of it, before or after."""
    return abs(start - episode_start) <= window


def incident_id(group_key: str, first_start: dt.datetime) -> str:
    """Deterministic, so two replicas receiving the same group agree on the id."""
    digest = hashlib.sha256(f"{group_key}|{first_start.isoformat()}".encode()).hexdigest()[:10]
    return f"inc-{first_start.year:04d}{first_start.month:02d}{first_start.day:02d}-{digest}"


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


def refires(existing: IncidentStatus | None, n: Notification) -> bool:
    """Whether `n` fires the group again after its latest incident resolved."""
    return existing == IncidentStatus.RESOLVED and n.status == "firing"


def opens_new_incident(existing: IncidentStatus | None, resolved_at: dt.datetime | None, n: Notification,
                       now: dt.datetime) -> bool:
    """Whether `n` starts a new incident rather than updating the group's latest one (`existing`, last
    changed at `resolved_at`).

    A group that fires again long after it resolved is a new episode: a new incident. Within FLAP_WINDOW it
    is the same trouble flapping and reopens its incident (the store counts it in `reopened`)."""
    if existing is None:
        return True
    return refires(existing, n) and (resolved_at is None or now - resolved_at > FLAP_WINDOW)


@dataclass(frozen=True)
class StoredAlert:
    """What the store holds of one alert that decides whether a re-delivery changes it."""

    status: str
    ends_at: dt.datetime | None
    annotations: dict[str, str]
    starts_at: dt.datetime | None = None  # a new start is the alert firing again: a new episode, written


@dataclass(frozen=True)
class Fold:
    """How one notification changes the stored alerts of its incident (see `fold`)."""

    write: list[Alert]  # alerts to insert or update: new ones within the cap, and changed ones
    added: int  # how many of `write` are new to the incident
    over_cap: int  # new alerts not stored because the incident already held the cap
    firing_delta: int  # change in the incident's number of firing alerts

    @property
    def changed(self) -> bool:
        return bool(self.write)


def fold(incoming: list[Alert], stored: Mapping[str, StoredAlert], count: int,
         max_alerts: int = MAX_ALERTS_PER_INCIDENT) -> Fold:
    """Fold a notification's alerts into an incident that holds `count` alerts, of which `stored` are those
    with the incoming fingerprints.

    A pure re-send writes nothing (Alertmanager re-sends on `repeat_interval` and after restarts). An
    incident keeps at most `max_alerts` alerts: updates to those it has always apply; further new ones are
    counted in `over_cap`, not stored, so one group cannot grow without bound.
    """
    latest = {a.fingerprint: a for a in incoming}  # a fingerprint repeated in one body: its last version wins
    write: list[Alert] = []
    added = over = delta = 0
    for fp, a in latest.items():
        old = stored.get(fp)
        if old is None:
            if count + added >= max_alerts:
                over += 1
                continue
            added += 1
            delta += a.status == "firing"
            write.append(a)
        elif (old.status, old.ends_at, old.annotations) != (a.status, a.ends_at, a.annotations) or (
                old.starts_at is not None and old.starts_at != a.starts_at):
            delta += (a.status == "firing") - (old.status == "firing")
            write.append(a)
    return Fold(write=write, added=added, over_cap=over, firing_delta=delta)


def assemble(*, id: str, group_key: str, firing: int, alerts: list[Alert], created_at: dt.datetime,
             updated_at: dt.datetime, notifications: int, alerts_over_cap: int, reopened: int = 0,
             folded_groups: list[str] | None = None) -> Incident:
    """The incident as readers see it: title, severity and common labels derived from its alerts."""
    alerts = sorted(alerts, key=lambda a: a.fingerprint)
    common = _common_labels(alerts)
    return Incident(id=id, group_key=group_key, status=IncidentStatus.FIRING if firing else IncidentStatus.RESOLVED,
                    title=_title(alerts, common), severity=_severity(alerts), labels=common, alerts=alerts,
                    created_at=created_at, updated_at=updated_at, notifications=notifications,
                    alerts_over_cap=alerts_over_cap, reopened=reopened, folded_groups=folded_groups or [])
