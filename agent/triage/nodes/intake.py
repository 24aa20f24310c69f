"""Intake node: turn the incident's alerts into the triage context and pick the runbooks.

The context is what evidence queries are parameterised with (namespace, model, node, pod, ...),
taken from the labels of the firing alerts. Annotations are kept as untrusted data.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from langgraph.runtime import Runtime

from agent.models import Untrusted
from agent.triage.runbooks import matching
from agent.triage.state import TriageContext, TriageState

# Alert labels that name where the problem is, and the context keys they fill.
LABEL_KEYS = {
    "namespace": "namespace",
    "model_name": "model_name",
    "model": "model_name",
    "pod": "pod",
    "Hostname": "node",
    "node": "node",
    "gpu": "gpu",
    "deployment": "deployment",
    "workload": "workload",  # the serving rules' workload label (pod name without its hash); resolve checks it
    "horizontalpodautoscaler": "hpa",
    "container": "container",
    "cluster": "cluster",
    "load_balancer": "load_balancer",  # a CloudWatch alarm's LoadBalancer dimension (see the sandbox's alarm bridge)
}


def context_from_labels(labels: dict[str, str]) -> dict[str, str]:
    ctx: dict[str, str] = {}
    for label, key in LABEL_KEYS.items():
        if labels.get(label) and key not in ctx:
            ctx[key] = labels[label]
    return ctx


async def intake(state: TriageState, runtime: Runtime[TriageContext]) -> dict[str, Any]:
    incident = state["incident"]
    firing = [a for a in incident.alerts if a.status == "firing"] or incident.alerts
    context = context_from_labels(incident.labels)
    for a in firing:  # labels every alert agrees on came first; fill gaps from the first alert that has them
        for k, v in context_from_labels(a.labels).items():
            context.setdefault(k, v)
    context["alertname"] = firing[0].name if firing else ""
    # Not from a label: the settings' fast rate() window, for evidence that must see a change within a
    # minute of it (a label cannot set it: only LABEL_KEYS are read from alerts).
    context["rate_window"] = f"{runtime.context.rate_window_s}s"
    books: list[str] = []
    for a in firing:
        for b in matching(runtime.context.runbooks, a.name, a.labels):
            if b.id not in books:
                books.append(b.id)
    untrusted = [Untrusted(source=f"alert[{a.name}].annotations.{k}", text=v)
                 for a in firing for k, v in sorted(a.annotations.items())]
    started = runtime.context.now or dt.datetime.now(dt.UTC)
    return {"context": context, "runbook_ids": books, "untrusted": untrusted, "started": started}
