"""Turn tool results into named features the runbooks' conditions read, and one-line summaries.

Features are the rules engine's vocabulary (see docs/runbooks.md): for a time series `baseline`,
`recent`, `change_ratio`, `onset_ago_s`, `max`, `last`...; for a rollout history `current_revision`,
`previous_revision`, `changed_ago_s`...; for pods `crashloop`, `oom_killed`, `pending`... Extractors
are chosen by the result's type, never by tool name. Times are measured from the result's own end
time, so a replayed result gives the same features as the live one did.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from agent.models import EvidenceStatus
from agent.triage.state import TriageState
from tools.base import ToolResult
from tools.cloudwatch.tools import CloudWatchLogEventsResult, CloudWatchMetricDataResult
from tools.k8s_read.ownership import gitops_owner
from tools.k8s_read.tools import (
    K8sEventsResult,
    K8sHpasResult,
    K8sNodesResult,
    K8sPodsResult,
    K8sRolloutHistoryResult,
    K8sRoutesResult,
    K8sWorkloadResult,
)
from tools.prometheus.tools import PrometheusInstantResult, PrometheusRangeResult
from tools.timeseries import SeriesSummary

RATIO_CAP = 1000.0  # change ratios from a zero baseline are capped so conditions stay finite

Extractor = Callable[[Any, dict[str, str]], dict[str, Any]]
_EXTRACTORS: dict[type[Any], Extractor] = {}
_SUMMARIZERS: dict[type[Any], Callable[[Any, dict[str, Any]], str]] = {}


def extractor(kind: type[Any]) -> Callable[[Extractor], Extractor]:
    def register(fn: Extractor) -> Extractor:
        _EXTRACTORS[kind] = fn
        return fn

    return register


def summarizer(
    kind: type[Any],
) -> Callable[[Callable[[Any, dict[str, Any]], str]], Callable[[Any, dict[str, Any]], str]]:
    def register(fn: Callable[[Any, dict[str, Any]], str]) -> Callable[[Any, dict[str, Any]], str]:
        _SUMMARIZERS[kind] = fn
        return fn

    return register


def extract(result: ToolResult, context: dict[str, str]) -> dict[str, Any]:
    fn = _EXTRACTORS.get(type(result))
    return fn(result, context) if fn else {}


def summarize(result: ToolResult, features: dict[str, Any]) -> str:
    fn = _SUMMARIZERS.get(type(result))
    if fn:
        return fn(result, features)
    shown = {k: v for k, v in features.items() if not isinstance(v, list | dict)}
    return ", ".join(f"{k}={_fmt(v)}" for k, v in list(shown.items())[:8]) or "ok"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def ratio(after: float | None, before: float | None) -> float | None:
    if after is None or before is None:
        return None
    if abs(before) < 1e-12:
        return 1.0 if abs(after) < 1e-12 else RATIO_CAP
    return min(RATIO_CAP, after / before)


def series_features(s: SeriesSummary, end: dt.datetime) -> dict[str, Any]:
    """Features of one summarized series (Prometheus or CloudWatch)."""
    f: dict[str, Any] = {"points": s.points, "min": s.min, "max": s.max, "mean": s.mean, "p95": s.p95, "last": s.last}
    # `recent` is the current level (the queries already smooth over a rate window); `baseline` is the
    # level before the clearest shift in the window, or the window's mean when there is none.
    cp = s.change_point
    f["recent"] = s.last
    if s.recent_shift is not None:
        # The latest excursion, however short, is what the alert is about; its usual level is the baseline.
        f["baseline"] = s.recent_shift.usual
        onset_at: dt.datetime | None = s.recent_shift.at
    elif cp is not None and cp.score >= 3:
        f["baseline"] = cp.before_mean
        onset_at = s.onset.at if s.onset is not None else cp.at
    else:
        f["baseline"] = s.mean
        onset_at = s.onset.at if s.onset is not None else None
    f["change_ratio"] = ratio(f["recent"], f["baseline"])
    if onset_at is not None:
        ago = max(0.0, (end - onset_at).total_seconds())
        f["onset_ago_s"] = ago
        f["onset_ago_min"] = round(ago / 60, 1)
    if s.trend is not None:
        f["trend_per_hour"] = s.trend.slope_per_hour
    return f


@extractor(PrometheusRangeResult)
def _prom_range(r: PrometheusRangeResult, _: dict[str, str]) -> dict[str, Any]:
    usable = [s for s in r.series if s.summary.points > 0]
    if not usable:
        return {"_empty": True, "series": 0}
    top = usable[0]
    f = series_features(top.summary, r.end)
    f["series"] = len(usable)
    for k, v in top.labels.items():
        f[f"top_{k}"] = v
    return f


@summarizer(PrometheusRangeResult)
def _prom_range_summary(r: PrometheusRangeResult, f: dict[str, Any]) -> str:
    if not f or f.get("series", 0) == 0:
        return f"no data for the last {(r.end - r.start).total_seconds() / 3600:.1f}h"
    text = f"now {_fmt(f.get('recent'))} (baseline {_fmt(f.get('baseline'))}, x{_fmt(f.get('change_ratio'))})"
    text += f", max {_fmt(f.get('max'))}"
    if "onset_ago_min" in f:
        text += f", changed {f['onset_ago_min']} min ago"
    return text


@extractor(PrometheusInstantResult)
def _prom_instant(r: PrometheusInstantResult, _: dict[str, str]) -> dict[str, Any]:
    values = [(s.value, s) for s in r.samples if s.value is not None]
    if not values:
        return {"_empty": True, "count": 0}
    value, top = max(values, key=lambda x: x[0])
    f: dict[str, Any] = {"value": value, "count": len(values), "sum": sum(v for v, _ in values)}
    for k, v in top.labels.items():
        f[f"top_{k}"] = v
    return f


@summarizer(PrometheusInstantResult)
def _prom_instant_summary(r: PrometheusInstantResult, f: dict[str, Any]) -> str:
    if not f.get("count"):
        return "no series"
    where = ", ".join(f"{k[4:]}={v}" for k, v in f.items() if k.startswith("top_"))[:120]
    return (
        f"{_fmt(f['value'])}"
        + (f" ({where})" if where else "")
        + (f" across {f['count']} series" if f["count"] > 1 else "")
    )


@extractor(CloudWatchMetricDataResult)
def _cw_metric(r: CloudWatchMetricDataResult, _: dict[str, str]) -> dict[str, Any]:
    usable = [s for s in r.series if s.summary.points > 0]
    if not usable:
        return {"_empty": True, "series": 0}
    f = series_features(usable[0].summary, r.end)
    f["series"] = len(usable)
    # Across every metric read (discovery: one per target group, node, ...): the worst and the total now.
    f["max_all"] = max(s.summary.max for s in usable if s.summary.max is not None)
    f["last_sum"] = sum(s.summary.last for s in usable if s.summary.last is not None)
    return f


@extractor(CloudWatchLogEventsResult)
def _cw_logs(r: CloudWatchLogEventsResult, _: dict[str, str]) -> dict[str, Any]:
    f: dict[str, Any] = {"matches": r.matches, "complete": r.complete}
    if r.first_match_at is not None:
        f["first_ago_s"] = max(0.0, (r.end - r.first_match_at).total_seconds())
    if r.last_match_at is not None:  # a line can only speak for a revision that was running when it was written
        f["last_ago_s"] = max(0.0, (r.end - r.last_match_at).total_seconds())
    return f


@summarizer(CloudWatchLogEventsResult)
def _cw_logs_summary(r: CloudWatchLogEventsResult, f: dict[str, Any]) -> str:
    if not r.matches:
        return f"no matching log lines in {r.log_group}"
    sample = r.events[0].message[:160] if r.events else ""
    return f"{r.matches} matching lines; newest: {sample!r}"


# --- Kubernetes --------------------------------------------------------------------------------------

# "NVRM: Xid (PCI:0000:53:00): 79, ..." — the code follows the optional PCI address.
_XID = re.compile(r"\bXid\b\s*(?:\([^)]*\))?\s*:?\s*(\d{1,3})\b", re.I)


@extractor(K8sRolloutHistoryResult)
def _rollout(r: K8sRolloutHistoryResult, _: dict[str, str]) -> dict[str, Any]:
    h = r.history
    f: dict[str, Any] = {
        "revisions": h.revisions_total,
        "current_revision": h.current_revision,
        "previous_revision": h.previous_revision,
        "current_version": h.current_version,
        "previous_version": h.previous_version,
        "paused": h.paused,
        "rollout_complete": h.rollout_complete,
        "estimated": h.changed_at_estimated,
        # The Deployment controller's own verdict: no progress within progressDeadlineSeconds.
        "deadline_exceeded": bool(h.progressing and h.progressing.status == "False"
                                  and h.progressing.reason == "ProgressDeadlineExceeded"),
    }
    # The newest revision older than the previous one that runs neither the current nor the previous
    # version: where a rollback goes when the previous revision carries the same defect.
    seen = {h.current_version, h.previous_version}
    older = next((r for r in h.revisions if h.previous_revision is not None and r.revision < h.previous_revision
                  and r.version not in seen), None)
    if older is not None:
        f["older_revision"] = older.revision
        f["older_version"] = older.version
    if h.changed_ago_s is not None:
        f["changed_ago_s"] = h.changed_ago_s
        f["changed_ago_slack_s"] = h.changed_ago_s + 180  # onset detection is as coarse as the query step
        f["changed_ago_min"] = round(h.changed_ago_s / 60, 1)
    return f


@summarizer(K8sRolloutHistoryResult)
def _rollout_summary(r: K8sRolloutHistoryResult, f: dict[str, Any]) -> str:
    h = r.history
    if h.current_revision is None:
        return "no revisions"
    text = f"revision {h.current_revision} ({h.current_version})"
    if h.changed_ago_s is not None:
        text += f" took over {h.changed_ago_s / 60:.0f} min ago"
    if h.previous_revision is not None:
        text += f"; before it revision {h.previous_revision} ({h.previous_version})"
    return text


@extractor(K8sPodsResult)
def _pods(r: K8sPodsResult, _: dict[str, str]) -> dict[str, Any]:
    c = r.counts
    f = {
        k: getattr(c, k)
        for k in (
            "total",
            "running",
            "pending",
            "ready",
            "not_ready",
            "crashloop",
            "oom_killed",
            "gpu_oom",
            "error_exit",
            "restarts_max",
            "unschedulable",
            "image_pull_errors",
        )
    }
    f["insufficient_gpu"] = sum(
        1 for p in r.pods if any("Insufficient nvidia.com/gpu" in (cond.message or "") for cond in p.conditions)
    )
    # Running, containers up and never restarted, yet not Ready: still starting (weights downloading or
    # loading), not crashing and not waiting on an image.
    f["starting"] = sum(
        1 for p in r.pods
        if p.phase == "Running" and not p.ready and p.restarts == 0
        and p.containers and all(c.state == "running" and not c.ready for c in p.containers)
    )
    return f


@summarizer(K8sPodsResult)
def _pods_summary(r: K8sPodsResult, f: dict[str, Any]) -> str:
    c = r.counts
    parts = [f"{c.total} pods, {c.ready} ready"]
    for key, label in (
        ("pending", "pending"),
        ("starting", "running but not ready"),
        ("crashloop", "crash-looping"),
        ("oom_killed", "OOMKilled"),
        ("gpu_oom", "CUDA OOM"),
        ("error_exit", "exited with an error"),
    ):
        if f.get(key):
            parts.append(f"{f[key]} {label}")
    if f.get("insufficient_gpu"):
        parts.append(f"{f['insufficient_gpu']} waiting for GPUs")
    return ", ".join(parts)


# Reasons the cloud's interruption handlers (Karpenter, aws-node-termination-handler) and the node
# lifecycle controller give when a node is taken away, as opposed to a node that merely misbehaves.
_INTERRUPTED = {"SpotInterrupted", "SpotInterruption", "InstanceTerminating", "InstanceStopping",
                "RebalanceRecommendation", "TerminatingOnInterruption"}
_REMOVED = {"RemovingNode", "DeletingNode"}


def _nodes_named(r: K8sEventsResult, reasons: set[str]) -> int:
    names = {o for e in r.events if e.reason in reasons for o in e.objects if o.startswith("Node/")}
    extra = sum(max(0, e.objects_total - len(e.objects)) for e in r.events if e.reason in reasons)
    return len(names) + extra


@extractor(K8sEventsResult)
def _events(r: K8sEventsResult, _: dict[str, str]) -> dict[str, Any]:
    xids = [int(m.group(1)) for e in r.events if (m := _XID.search(e.message))]
    return {
        "nodes_interrupted": _nodes_named(r, _INTERRUPTED),
        "nodes_removed": _nodes_named(r, _REMOVED | _INTERRUPTED),
        "count": sum(e.count for e in r.events),
        "distinct": r.distinct,
        "xid": xids[0] if xids else 0,
        "insufficient_gpu": sum(e.count for e in r.events if "Insufficient nvidia.com/gpu" in e.message),
        "warnings": sum(e.count for e in r.events if e.type == "Warning"),
    }


@extractor(K8sNodesResult)
def _nodes(r: K8sNodesResult, _: dict[str, str]) -> dict[str, Any]:
    missing = [n for n in r.nodes if n.gpus_missing > 0]
    return {
        "gpu_nodes": r.gpu_nodes,
        "gpus_missing": r.gpus_missing,
        "unallocatable": len(missing),
        "unallocatable_nodes": ",".join(n.name for n in missing[:5]),
        "cordoned": sum(1 for n in r.nodes if n.unschedulable),
        "not_ready": r.total - r.ready,
    }


@extractor(K8sWorkloadResult)
def _workload(r: K8sWorkloadResult, _: dict[str, str]) -> dict[str, Any]:
    w = r.workload
    owner = gitops_owner(w.other_labels, w.annotations)  # instance/managed-by labels are in other_labels
    gitops: dict[str, Any] = {"gitops": owner is not None}
    if owner is not None:
        gitops |= {"gitops_tool": "Argo CD" if owner.tool == "argocd" else "Flux", "gitops_source": owner.source,
                   "gitops_evidence": owner.evidence, "gitops_certain": owner.certain}
    return gitops | {
        "replicas": w.replicas,
        "ready_replicas": w.ready_replicas,
        "available_replicas": w.available_replicas,
        "gpus_per_replica": w.gpus_per_replica,
        "gpus_total": w.gpus_requested,
        "revision": w.revision,
        "model": w.labels.model,
        "model_version": w.labels.model_version,
    }


@extractor(K8sHpasResult)
def _hpas(r: K8sHpasResult, _: dict[str, str]) -> dict[str, Any]:
    return {"count": r.total, "at_max": r.at_max}


@extractor(K8sRoutesResult)
def _routes(r: K8sRoutesResult, context: dict[str, str]) -> dict[str, Any]:
    """The route that sends traffic to the context's Deployment (its Service has the Deployment's name): that
    backend's share now and as last applied, and the route's newest spec write."""
    backend = context.get("deployment")
    f: dict[str, Any] = {"routes": r.total}
    route = next((x for x in r.routes if any(b.name == backend for b in x.backends)), None)
    if route is None:
        return f
    me = next(b for b in route.backends if b.name == backend)
    f |= {"route": route.name, "generation": route.generation, "changed": route.generation > 1,
          "differs": route.differs_from_applied, "applied_known": route.applied_known,
          "weights": ", ".join(f"{b.name} {b.weight}" for b in route.backends),
          "peers": ",".join(str(b.name) for b in route.backends if b is not me),
          "share": me.share, "share_pct": round(100 * me.share)}
    if route.applied_known:
        f["applied_weights"] = ", ".join(f"{b.name} {b.applied_weight or 0}" for b in route.backends)
    if me.applied_share is not None:
        f |= {"applied_share": me.applied_share, "applied_share_pct": round(100 * me.applied_share),
              "share_change": round(me.share - me.applied_share, 4)}
    if route.changed_ago_s is not None and route.last_write is not None:
        f |= {"changed_ago_s": route.changed_ago_s, "changed_ago_min": round(route.changed_ago_s / 60, 1),
              "changed_by": route.last_write.manager, "changed_backends": route.last_write.owns_backends}
    return f


@summarizer(K8sRoutesResult)
def _routes_summary(r: K8sRoutesResult, f: dict[str, Any]) -> str:
    if "route" not in f:
        return f"no route sends traffic here ({r.total} route(s) in the namespace)" + (
            f"; {r.notes[0]}" if r.notes else "")
    text = f"route {f['route']}: weights {f['weights']}"
    if f.get("differs"):
        text += f" (last applied: {f['applied_weights']})"
    if "changed_ago_min" in f:
        text += f"; spec changed {f['changed_ago_min']} min ago by {f['changed_by']} (generation {f['generation']})"
    else:
        text += "; never changed since created"
    return text


# ---- shared by the nodes and the reasoners ----------------------------------------------------------

MIN_CONFIDENCE = 0.35  # below this, a hypothesis is not worth acting on
CULPRIT_KINDS = {"deployment": "Deployment", "node": "Node", "pod": "Pod", "hpa": "HorizontalPodAutoscaler",
                 "namespace": "Namespace", "model_name": "Model", "route": "HTTPRoute"}
NAMESPACED_KINDS = ("Deployment", "Pod", "HorizontalPodAutoscaler", "HTTPRoute")


def feature_map(state: TriageState) -> dict[str, Any]:
    """All facts a condition may name: `ctx.<key>` and `<evidence id>.<feature>`."""
    feats: dict[str, Any] = {f"ctx.{k}": v for k, v in state.get("context", {}).items()}
    for e in state.get("evidence", []):
        feats[f"{e.id}.ok"] = e.status == EvidenceStatus.OK
        feats[f"{e.id}.status"] = e.status.value
        if e.status in (EvidenceStatus.OK, EvidenceStatus.EMPTY):
            for k, v in e.features.items():
                feats[f"{e.id}.{k}"] = v
    return feats
