"""Verify a change: watch the rollout finish, then compare SLO signals with the baseline before it.

The verifier reads with the read-only identity. Signals are the model's TTFT p95, error share and
queue depth, sampled every `step_s` over the verification window after the rollout completed and
over an equal baseline window before the change, and against the level it was applied at (the
baseline's last rate window: a mitigation applied mid-incident is not blamed for the incident).
`agent.change.verdict` judges each; missing data is
inconclusive, never a pass. A stuck rollout (past its progress deadline) is a failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from agent.change.models import ChangeRequest
from agent.change.verdict import Outcome, SignalVerdict, judge, overall
from agent.models import ActionKind
from tools.k8s_read.client import K8sReadClient
from tools.prometheus import promql
from tools.prometheus.client import PrometheusClient


@dataclass(frozen=True)
class VerifySettings:
    window_s: float = 60.0  # how long to watch after the rollout completes (and the rate window has passed)
    baseline_s: float = 120.0  # how far before the change the baseline reaches
    step_s: float = 5.0
    rate_window_s: int = 30  # rate() window of the signal queries; needs >= 3 scrapes
    rollout_deadline_s: float = 180.0
    # Floors: a signal below them is never a regression, and one above them after the change means the
    # SLO is not restored. They match the alert thresholds (deploy/prometheus/gpu-serving.rules.yaml).
    ttft_floor_s: float = 1.5
    error_floor: float = 0.02
    queue_floor: float = 5.0


@dataclass
class Verification:
    change_id: str
    outcome: Outcome
    rollout: str
    signals: list[SignalVerdict] = field(default_factory=list)
    rollout_seconds: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{self.outcome.value}: rollout {self.rollout} in {self.rollout_seconds:.0f}s"]
        parts += [f"{v.signal} {v.outcome.value} ({v.reason})" for v in self.signals]
        return "; ".join(parts)


def _pods(workload: str | None) -> promql.Matcher:
    """The pods of `workload` (another workload may serve the same model: its pods are not this change's);
    every series when no workload is named."""
    return promql.matches("pod", promql.workload_pods(workload) if workload else promql.ANY_POD)


def signal_queries(namespace: str, model: str, rate_window_s: int = 30,
                   workload: str | None = None) -> dict[str, str]:
    """TTFT p95, 5xx share and queue of the model's pods (of `workload`'s pods, when given)."""
    own = _pods(workload)
    sel = promql.selector("vllm:num_requests_running", own, namespace=namespace, model_name=model)
    pods = f"* on (namespace, pod) group_left(model_name) (0 * max by (namespace, pod, model_name) ({sel}) + 1)"
    ns = promql.quote(namespace)
    w = f"{rate_window_s}s"
    ttft_sel = promql.selector("vllm:time_to_first_token_seconds_bucket", own, namespace=namespace, model_name=model)
    waiting = promql.selector("vllm:num_requests_waiting", own, namespace=namespace, model_name=model)
    return {
        "ttft_p95": f"histogram_quantile(0.95, sum by (le) (rate({ttft_sel}[{w}])))",
        "error_share": (f'sum(rate(http_requests_total{{namespace={ns}, status="5xx"}}[{w}]) {pods}) / '
                        f"sum(rate(http_requests_total{{namespace={ns}}}[{w}]) {pods})"),
        "queue": f"sum({waiting})",
    }


# A replica whose share of 5xx answers over FAILING_WINDOW is above this serves its users no better than a
# replica that is down: replacing it removes no healthy serving capacity (blast_radius).
FAILING_ERROR_SHARE = 0.05
FAILING_WINDOW = "5m"


def failing_replicas_query(namespace: str, model: str, window: str = FAILING_WINDOW,
                           share: float = FAILING_ERROR_SHARE, workload: str | None = None) -> tuple[str, str]:
    """(the model's pods that serve, the model's pods whose 5xx share is above `share`): two instant queries,
    per pod, joined to the model's pods (`workload`'s, when given) by its engine's own series."""
    sel = promql.selector("vllm:num_requests_running", _pods(workload), namespace=namespace, model_name=model)
    pods = f"* on (namespace, pod) group_left(model_name) (0 * max by (namespace, pod, model_name) ({sel}) + 1)"
    ns = promql.quote(namespace)
    w = promql.check_duration(window)
    total = f"sum by (pod) (rate(http_requests_total{{namespace={ns}}}[{w}]) {pods})"
    errors = f'sum by (pod) (rate(http_requests_total{{namespace={ns}, status="5xx"}}[{w}]) {pods})'
    return f"{total} > 0", f"({errors} / {total}) > {share}"


# A replica holding requests that generated no token over STALLED_WINDOW is hung (a tensor-parallel rank stuck
# in a collective): Ready to Kubernetes, serving nobody. The alert ModelServerStalled uses the same test.
STALLED_WINDOW = "1m"


def stalled_pods_query(namespace: str, model: str, window: str = STALLED_WINDOW, workload: str | None = None) -> str:
    """The model's pods that hold running requests but generated no token over `window` (one series per pod).

    The pod must have held requests a whole window ago as well: a replica that just started has no token rate
    yet, and calling it hung would count its restart as no loss of healthy capacity."""
    own = _pods(workload)
    running = promql.selector("vllm:num_requests_running", own, namespace=namespace, model_name=model)
    tokens = promql.selector("vllm:generation_tokens_total", own, namespace=namespace, model_name=model)
    w = promql.check_duration(window)
    return (f"((max by (pod) ({running}) > 0) and on (pod) (max by (pod) ({running} offset {w}) > 0)) "
            f"unless on (pod) (sum by (pod) (rate({tokens}[{w}])) > 0)")


async def failing_pods(prom: PrometheusClient, namespace: str, model: str,
                       workload: str | None = None) -> set[str] | None:
    """The model's serving pods (`workload`'s, when given) that serve nobody now, read from Prometheus (not from
    anything the model or an alert said): those answering more than FAILING_ERROR_SHARE of requests with 5xx,
    and those that are hung (running requests, no tokens). None when the pods have no traffic series (not a
    vLLM engine, no traffic): unknown, which counts as healthy."""
    if not model:
        return None
    serving_q, failing_q = failing_replicas_query(namespace, model, workload=workload)
    serving = await prom.query(serving_q)
    if not serving.series:
        return None
    out: set[str] = set()
    for q in (failing_q, stalled_pods_query(namespace, model, workload=workload)):
        out |= {s.labels.get("pod", "") for s in (await prom.query(q)).series}
    return out - {""}


async def failing_replicas(prom: PrometheusClient, namespace: str, model: str, workload: str) -> int | None:
    """How many of `workload`'s serving pods serve nobody now (`failing_pods`); None when unknown. Only its own
    pods: another workload's failing replicas of the same model are no capacity this workload may lose."""
    pods = await failing_pods(prom, namespace, model, workload)
    return None if pods is None else len(pods)


def rollout_state(d: dict[str, Any], since: dt.datetime | None = None) -> tuple[bool, str]:
    """(finished, state) of a Deployment as the API returned it, for a change applied at `since`."""
    spec, st = d["spec"], d.get("status", {})
    want = int(spec.get("replicas") or 0)
    if int(st.get("observedGeneration") or 0) < int(d["metadata"]["generation"]):
        return False, "waiting for the controller"
    for c in st.get("conditions", []):
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded" \
                and _since(c, since):
            return True, "stuck: progress deadline exceeded"
    updated, available = int(st.get("updatedReplicas") or 0), int(st.get("availableReplicas") or 0)
    if updated == want and available == want and int(st.get("replicas") or 0) == want:
        return True, "complete"
    return False, f"{st.get('updatedReplicas', 0)}/{want} updated"


def _since(condition: dict[str, Any], since: dt.datetime | None) -> bool:
    """Whether a condition was written at or after `since`. The controller keeps a timed-out Progressing
    condition until the new ReplicaSet makes progress, so right after a rollback of a stuck rollout the old
    deadline is still in the status: it speaks for the rollout before the change, not this one. The API's
    timestamps have whole seconds, so the second the change was applied in counts as after it."""
    stamp = condition.get("lastUpdateTime") or condition.get("lastTransitionTime")
    if since is None or not stamp:
        return True
    at = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    since = since if since.tzinfo is not None else since.replace(tzinfo=dt.UTC)
    return at >= since.replace(microsecond=0)


async def _rollout_done(k8s: K8sReadClient, namespace: str, name: str, *, since: dt.datetime | None = None,
                        scale_out: bool = False) -> tuple[bool, str]:
    resp = await asyncio.to_thread(k8s.apps.read_namespaced_deployment, name, namespace, _preload_content=False)
    d = json.loads(resp.data)
    done, state = rollout_state(d, since)
    if done or state == "waiting for the controller":
        return done, state
    spec, st = d["spec"], d.get("status", {})
    want = int(spec.get("replicas") or 0)
    updated, available = int(st.get("updatedReplicas") or 0), int(st.get("availableReplicas") or 0)
    if scale_out and updated == want and 0 < available < want:
        # Replicas no node has room for (a scale-out beyond the free GPUs) will not start by waiting:
        # judge the signals with the capacity that did come up instead of calling the change stuck.
        unschedulable = await _unschedulable(k8s, namespace, d["spec"].get("selector") or {})
        if unschedulable and available + unschedulable >= want:
            return True, f"complete: {available}/{want} available, {unschedulable} unschedulable (no node has room)"
    return False, f"{st.get('updatedReplicas', 0)}/{want} updated"


async def _unschedulable(k8s: K8sReadClient, namespace: str, selector: dict[str, Any]) -> int:
    labels = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
    if not labels:
        return 0
    resp = await asyncio.to_thread(k8s.core.list_namespaced_pod, namespace, label_selector=labels,
                                   _preload_content=False)
    n = 0
    for pod in json.loads(resp.data).get("items", []):
        conds = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
               for c in conds):
            n += 1
    return n


async def _samples(prom: PrometheusClient, expr: str, start: dt.datetime, end: dt.datetime,
                   step_s: float) -> list[float]:
    rng = await prom.query_range(expr, start, end, step_s)
    return [v for s in rng.data.series for _, v in s.samples]


async def verify(ch: ChangeRequest, applied_at: dt.datetime, prom: PrometheusClient, k8s: K8sReadClient,
                 s: VerifySettings = VerifySettings()) -> Verification:
    t0 = time.monotonic()
    t = ch.spec.target
    restarted: str | None = None  # a pod restart: the pod whose replacement is watched
    if ch.spec.action == ActionKind.RESTART_POD and t.namespace:
        restarted = t.name
        t = t.model_copy(update={"kind": "Deployment", "name": restart_owner(ch)})
    if t.kind != "Deployment" or not t.namespace:
        return Verification(ch.id, Outcome.INCONCLUSIVE, "not a Deployment: nothing to watch")
    deadline = time.monotonic() + s.rollout_deadline_s
    state = "not started"
    while time.monotonic() < deadline:
        if restarted is not None and not await _pod_gone(k8s, t.namespace, restarted, ch.fingerprint.uid):
            done, state = False, f"waiting for pod {restarted} to go"
        else:
            done, state = await _rollout_done(k8s, t.namespace, t.name, since=applied_at,
                                               scale_out=ch.spec.action == ActionKind.SCALE)
        if done:
            break
        await asyncio.sleep(2)
    rollout_s = time.monotonic() - t0
    if not state.startswith("complete"):
        return Verification(ch.id, Outcome.REGRESSION, state if state.startswith("stuck") else f"timed out ({state})",
                            rollout_seconds=rollout_s, seconds=rollout_s)
    resp = await asyncio.to_thread(k8s.apps.read_namespaced_deployment, t.name, t.namespace, _preload_content=False)
    model = (json.loads(resp.data)["spec"]["template"]["metadata"].get("labels") or {}).get("model", "")
    done_at = dt.datetime.now(dt.UTC)
    # The rate window must not reach back into the rollout: the verification window starts one rate
    # window after the rollout completed.
    after_start = done_at + dt.timedelta(seconds=s.rate_window_s)
    await asyncio.sleep(s.rate_window_s + s.window_s)
    end = dt.datetime.now(dt.UTC)
    base_end = applied_at
    base_start = applied_at - dt.timedelta(seconds=s.baseline_s)
    floors = {"ttft_p95": s.ttft_floor_s, "error_share": s.error_floor, "queue": s.queue_floor}
    verdicts: list[SignalVerdict] = []
    for name, expr in signal_queries(t.namespace, model, s.rate_window_s, workload=t.name).items():
        try:
            before = await _samples(prom, expr, base_start, base_end, s.step_s)
            after = await _samples(prom, expr, after_start, end, s.step_s)
        except Exception as e:  # missing data is inconclusive, and says why
            verdicts.append(SignalVerdict(name, Outcome.INCONCLUSIVE, None, None, None, f"query failed: {e}"))
            continue
        # The level the change was applied at: the last rate window of the baseline.
        tail_n = max(3, math.ceil(s.rate_window_s / s.step_s))
        v = judge(name, before, after, floor=floors[name], min_points=6, just_before=before[-tail_n:])
        if v.outcome == Outcome.PASS and v.after_median is not None and v.after_median > floors[name]:
            v = SignalVerdict(name, Outcome.INCONCLUSIVE, v.baseline_median, v.after_median, v.p_value,
                              f"not worse than before, but still above the SLO floor {floors[name]:g} "
                              f"({v.after_median:.4g})")
        verdicts.append(v)
    if restarted is not None:
        verdicts.append(await _stalled_verdict(prom, t.namespace, model, t.name))
    return Verification(ch.id, overall(verdicts), state, verdicts, rollout_s, time.monotonic() - t0)


def restart_owner(ch: ChangeRequest) -> str:
    """The Deployment behind a restarted pod: as the write reported it, else from the pod's name (a ReplicaSet
    pod is named `<deployment>-<template hash>-<suffix>`)."""
    detail = (ch.result or {}).get("detail") or {}
    return str(detail.get("deployment") or ch.spec.target.name.rsplit("-", 2)[0])


async def _pod_gone(k8s: K8sReadClient, namespace: str, name: str, uid: str) -> bool:
    """The pod with `uid` no longer exists (a replacement under the same name is another pod)."""
    resp = await asyncio.to_thread(k8s.core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
                                   _preload_content=False)
    return not any(p["metadata"].get("uid") == uid for p in json.loads(resp.data).get("items", []))


async def _stalled_verdict(prom: PrometheusClient, namespace: str, model: str, workload: str) -> SignalVerdict:
    """After a pod restart: does every replica of the workload generate tokens for the requests it holds?"""
    try:
        answer = await prom.query(stalled_pods_query(namespace, model, workload=workload))
        stalled = sorted(s.labels.get("pod", "") for s in answer.series)
        sel = promql.selector("vllm:generation_tokens_total", _pods(workload), namespace=namespace, model_name=model)
        tokens = await prom.query(f"sum(rate({sel}[{STALLED_WINDOW}]))")
    except Exception as e:  # missing data is inconclusive, and says why
        return SignalVerdict("stalled_pods", Outcome.INCONCLUSIVE, None, None, None, f"query failed: {e}")
    rate = tokens.series[0].samples[0][1] if tokens.series and tokens.series[0].samples else None
    if stalled:
        return SignalVerdict("stalled_pods", Outcome.REGRESSION, None, float(len(stalled)), None,
                             f"still holding requests without generating tokens: {', '.join(stalled)}")
    if not rate:
        return SignalVerdict("stalled_pods", Outcome.INCONCLUSIVE, None, 0.0, None,
                             "no tokens generated by the model at all (no traffic?)")
    return SignalVerdict("stalled_pods", Outcome.PASS, None, 0.0, None,
                         f"every replica generates tokens ({rate:.0f} tokens/s for the model)")

