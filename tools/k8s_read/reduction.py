"""The shared rules for reducing API objects for a model: bounded text, times, conditions, model labels.

Resource-specific reductions (`pods`, `workloads`, `rollout`, `nodes`, `events`, `hpas`) use these so
every answer truncates, dates and flags things the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tools.base import UntrustedStr

MODEL_LABEL = "model"
MODEL_VERSION_LABEL = "model-version"
RUNTIME_LABEL = "serving-runtime"
TEAM_LABEL = "team"
APP_LABEL = "app.kubernetes.io/name"
# Annotations that are machine state, huge, or both: never shown.
HIDDEN_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Condition(Out):
    type: str
    status: str
    reason: UntrustedStr | None = None
    message: UntrustedStr | None = None
    last_transition: dt.datetime | None = None


class ModelLabels(Out):
    """The serving labels that say what a workload runs (all untrusted: anyone who edits it writes them)."""

    model: UntrustedStr | None = None
    model_version: UntrustedStr | None = None
    serving_runtime: UntrustedStr | None = None
    team: UntrustedStr | None = None
    app: UntrustedStr | None = Field(default=None, description="app.kubernetes.io/name")


def clip(text: Any, limit: int) -> str:
    """Text cut to `limit` characters, marked with an ellipsis when cut."""
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def conditions(raw: Iterable[Mapping[str, Any]] | None, limit: int) -> list[Condition]:
    return [
        Condition(type=str(c.get("type", "")), status=str(c.get("status", "")),
                  reason=c.get("reason") or None,
                  message=clip(c["message"], limit) if c.get("message") else None,
                  last_transition=parse_time(c.get("lastTransitionTime")))
        for c in raw or []
    ]


def model_labels(*label_sets: Mapping[str, str] | None) -> ModelLabels:
    """Serving labels, first label set that has each one wins (pod template before the object)."""
    def pick(key: str) -> str | None:
        for labels in label_sets:
            if labels and labels.get(key):
                return str(labels[key])
        return None

    return ModelLabels(model=pick(MODEL_LABEL), model_version=pick(MODEL_VERSION_LABEL),
                       serving_runtime=pick(RUNTIME_LABEL), team=pick(TEAM_LABEL), app=pick(APP_LABEL))


def visible_annotations(annotations: Mapping[str, str] | None, limit: int, keep: int = 10) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in sorted((annotations or {}).items()):
        if k in HIDDEN_ANNOTATIONS:
            continue
        if len(out) >= keep:
            break
        out[k] = clip(v, limit)
    return out


def visible_labels(labels: Mapping[str, str] | None, limit: int, keep: int = 10) -> dict[str, str]:
    """An object's labels other than the serving ones `model_labels` reads, clipped (they are free text
    to anyone who may edit the object, and a diagnosis should see what was put there)."""
    serving = {MODEL_LABEL, MODEL_VERSION_LABEL, RUNTIME_LABEL, TEAM_LABEL, APP_LABEL}
    out: dict[str, str] = {}
    for k, v in sorted((labels or {}).items()):
        if k in serving or not v:
            continue
        if len(out) >= keep:
            break
        out[k] = clip(v, limit)
    return out


def label_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector object as the string the list API takes (`a=b,c in (d,e),!f`)."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
