"""Build the Alertmanager notification a rule would have sent, when a scenario cannot wait for the real one.

Some rules need more history than a run has (a 30-minute average), and a healthy control asks the agent
about an alert that never fired. The body built here has the shape the sandbox's Alertmanager sends —
its receiver, a group key in Alertmanager's own format over the route's `group_by`, fingerprints, the
rule's labels and annotations, a generator URL with the rule's expression, an external URL — so nothing
in it tells the agent it was built. A scenario may leave out any label (`detection.omit_labels`,
`alertname` included): a real alert from someone else's rule may carry none of ours.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import urllib.parse
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "gpu-serving.rules.yaml"
GROUP_BY = ("alertname", "namespace", "workload", "model_name", "Hostname")  # deploy/sandbox/monitoring.py's route
RECEIVER = "opsagent"
FOR_S = 15  # the sandbox's shortened `for:`: an alert starts this long before it is sent
_TEMPLATE = re.compile(r"{{\s*(.*?)\s*}}")


class AlertBuildError(ValueError):
    """The scenario's labels cannot make an alert (every label left out)."""


@lru_cache(maxsize=4)
def _rules(path: Path = RULES) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def per_workload(alertname: str) -> bool:
    """Whether the rule's alerts carry a `workload` label (the serving SLO rules group by it)."""
    return '"workload"' in str(_rules().get(alertname, {}).get("expr", ""))


def _render(template: str, labels: dict[str, str]) -> str | None:
    """Fill `{{ $labels.x }}`; None when the template needs what a built alert does not have ($value, a label)."""
    out = template
    for expr in _TEMPLATE.findall(template):
        if not expr.startswith("$labels."):
            return None
        value = labels.get(expr.removeprefix("$labels."))
        if value is None:
            return None
        out = out.replace("{{ " + expr + " }}", value).replace("{{" + expr + "}}", value)
    return out


def fingerprint(labels: dict[str, str]) -> str:
    """A stable 16-hex-digit fingerprint of a label set (Alertmanager's are 64-bit hashes shown the same way)."""
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


def group_key(labels: dict[str, str]) -> str:
    """Alertmanager's group key for the sandbox route: `{}:{alertname="X", namespace="Y"}`."""
    present = [(k, labels[k]) for k in sorted(GROUP_BY) if k in labels]
    return "{}:{" + ", ".join(f'{k}="{v}"' for k, v in present) + "}"


def build(labels: dict[str, str], *, omit: list[str], now: dt.datetime, cluster: str,
          prometheus_url: str, alertmanager_url: str) -> dict[str, Any]:
    """The webhook body (version 4) for one firing alert with `labels`, less the `omit`ted ones."""
    rule = _rules().get(labels.get("alertname", ""), {})
    full = {"cluster": cluster, **rule.get("labels", {}), **labels}
    for name in omit:
        full.pop(name, None)
    if not full:
        raise AlertBuildError("omit_labels leaves the alert without a single label")
    annotations = {}
    for key, template in (rule.get("annotations") or {}).items():
        text = _render(str(template), full)
        if text is not None:
            annotations[key] = text
    expr = str(rule.get("expr", "")).strip()
    generator = (f"{prometheus_url}/graph?g0.expr={urllib.parse.quote_plus(expr)}&g0.tab=1" if expr else "")
    starts = (now - dt.timedelta(seconds=FOR_S)).astimezone(dt.UTC)
    alert = {"status": "firing", "labels": full, "annotations": annotations,
             "startsAt": starts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": generator, "fingerprint": fingerprint(full)}
    group = {k: full[k] for k in GROUP_BY if k in full}
    return {"receiver": RECEIVER, "status": "firing", "alerts": [alert], "groupLabels": group,
            "commonLabels": dict(full), "commonAnnotations": dict(annotations),
            "externalURL": alertmanager_url, "version": "4", "groupKey": group_key(full), "truncatedAlerts": 0}
