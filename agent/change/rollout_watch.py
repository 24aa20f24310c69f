"""Watch an Argo Rollout after its template was written: its steps, its analysis, promotion or abort.

The controller runs the canary and judges it with the project's AnalysisTemplate; the agent does not
judge again, it reports: each step as it is reached, the time from the write to 100 %, or the abort
with the AnalysisRun's failed metric and its measured value. An inconclusive analysis (no data) pauses
the rollout for a human and is reported as such, never as a pass.

Reads with the read-only identity; must not write (the executor undoes an aborted canary's template).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes import client

from agent.change.models import ChangeRequest
from agent.change.verdict import Outcome
from agent.change.verify import Verification
from agent.models import ActionKind
from tools.k8s_read.client import K8sReadClient
from tools.pod_template import template_summary

GROUP, VERSION = "argoproj.io", "v1alpha1"
# (message, canary): `canary` when the message is about a canary still running, which a person may promote
# or abort (a step reached, an inconclusive pause); not before the controller took up the template, nor at
# the end.
Progress = Callable[[str, bool], Awaitable[None]]
Compare = Callable[[str, str], Awaitable[str]]  # (stable hash, canary hash) → canary vs stable per GPU class
COMPARE_EVERY_S = 10.0  # the AnalysisTemplate's measurement interval


def weight_at(rollout: Mapping[str, Any], index: int) -> int:
    """The canary weight in force at step `index` (100 past the last step)."""
    steps = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []
    if index >= len(steps):
        return 100
    weight = 0
    for s in steps[: index + 1]:
        weight = int(s.get("setWeight", weight))
    return weight


def step_kind(rollout: Mapping[str, Any], index: int) -> str:
    """What step `index` does: setWeight, analysis, pause (or done past the last)."""
    steps = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []
    if index >= len(steps):
        return "done"
    return next(iter(steps[index]), "step")


def superseded(rollout: Mapping[str, Any], ch: ChangeRequest) -> str | None:
    """Why the Rollout no longer runs the template `ch` wrote (a later deployment or rollback replaced it),
    or None while it does (or when `ch` wrote no template). Compares what the change set: its labels (the
    model version), image, arguments, GPUs and node selector."""
    if ch.spec.action not in (ActionKind.DEPLOY, ActionKind.SET_GPU_RESOURCES):
        return None
    p = ch.spec.params
    now = template_summary(((rollout.get("spec") or {}).get("template") or {}), str(p.get("container", "")))
    for key in ("image", "args", "gpus", "mig_profile", "node_selector"):
        if p.get(key) is not None and now.get(key) != p[key]:
            return f"its {key.replace('_', ' ')} is now {now.get(key)!r}, not {p[key]!r}"
    labels = dict(p.get("labels") or {})
    changed = {k: now["labels"].get(k) for k, v in labels.items() if now["labels"].get(k) != v}
    return f"its labels are now {changed}, not {labels}" if changed else None


def failed_metrics(run: Mapping[str, Any]) -> list[str]:
    """"name = value > limit" for each failed or errored metric of an AnalysisRun."""
    args = {a.get("name"): a.get("value") for a in (run.get("spec") or {}).get("args") or []}
    limits = {}
    for m in (run.get("spec") or {}).get("metrics") or []:
        cond = str(m.get("failureCondition") or "")
        limit = re.search(r"result\[0\]\s*([<>]=?)\s*\{\{\s*args\.([\w-]+)\s*\}\}", cond)
        if limit:
            limits[m.get("name")] = f" {limit.group(1)} {args.get(limit.group(2), limit.group(2))}"
    out = []
    for m in (run.get("status") or {}).get("metricResults") or []:
        if m.get("phase") not in ("Failed", "Error"):
            continue
        last = (m.get("measurements") or [{}])[-1]
        value = str(last.get("value", "no value")).strip("[]")
        with contextlib.suppress(ValueError):
            value = f"{float(value):.4g}"
        what = limits.get(m.get("name"), "") if m.get("phase") == "Failed" else f" (error: {m.get('message', '')})"
        out.append(f"{m.get('name')} = {value}{what}")
    return out


async def watch_rollout(ch: ChangeRequest, k8s: K8sReadClient, *, on_progress: Progress, deadline_s: float = 1200,
                        poll_s: float = 2.0, compare: Compare | None = None) -> Verification:
    """Follow the Rollout until promoted (pass), aborted (regression; a pass when the change was the abort),
    or paused inconclusive / out of time.

    With `compare`, each step and the verdict also say how the canary does against stable per GPU class
    (`agent.change.class_evidence`): for a GPU-class move, the new class against the old.
    """
    t = ch.spec.target
    assert t.namespace
    custom = client.CustomObjectsApi(k8s.api)
    old_stable = str((ch.result.get("detail") or {}).get("stable_rs") or "")
    t0 = time.monotonic()
    seen: tuple[int, int] | None = None
    figures = ""  # the latest canary-vs-stable comparison with the most of both sides in it
    read_at = -math.inf

    def sides(text: str) -> int:
        return ("canary on" in text) + ("stable on" in text)

    async def compared(new: str) -> str:
        """Read the comparison now; keep it unless it has fewer sides than the last (an aborted canary's
        pods go within seconds, a promoted canary's stable too)."""
        nonlocal figures, read_at
        if compare is not None and old_stable:
            read_at = time.monotonic()
            got = await compare(old_stable, new)
            if sides(got) >= sides(figures):
                figures = got
        return f"; {figures}" if figures else ""

    async def read() -> dict[str, Any]:
        return await k8s.read(f"read rollout {t.namespace}/{t.name}", custom.get_namespaced_custom_object,
                              GROUP, VERSION, t.namespace, "rollouts", t.name)

    while time.monotonic() - t0 < deadline_s:
        ro = await read()
        st = ro.get("status") or {}
        if (why := superseded(ro, ch)) is not None:
            # Another change replaced this one's template (a later deployment, a rollback): what the
            # controller runs now is not this change's canary, and its outcome is not this change's.
            await on_progress(f"no longer this change's rollout: {why}", False)
            return Verification(ch.id, Outcome.INCONCLUSIVE, f"superseded before its canary ended: the Rollout's "
                                f"template was replaced ({why})", rollout_seconds=time.monotonic() - t0,
                                seconds=time.monotonic() - t0)
        new = str(st.get("currentPodHash") or "")
        elapsed = time.monotonic() - t0
        if ch.spec.action == ActionKind.ABORT_ROLLOUT and new and new == old_stable and not st.get("abort") \
                and int(st.get("availableReplicas") or 0) >= int(ro["spec"].get("replicas") or 0):
            # The abort landed and the deployment it stopped was already undone (its template put back,
            # which clears the controller's abort flag): the canary is gone, stable serves everything.
            await on_progress(f"aborted as asked: the canary is gone and stable {old_stable} serves every "
                              f"replica ({elapsed:.0f} s)", False)
            return Verification(ch.id, Outcome.PASS, "aborted as asked; stable serves every replica",
                                rollout_seconds=elapsed, seconds=elapsed)
        if not new or new == old_stable or str(st.get("observedGeneration", "")) != str(
                ro["metadata"].get("generation", "")):
            await asyncio.sleep(poll_s)  # the controller has not taken up the new template yet
            continue
        if compare is not None and not st.get("abort") and time.monotonic() - read_at >= COMPARE_EVERY_S:
            await compared(new)  # while the canary serves, so the verdict has its figures
        if st.get("abort") and ch.spec.action == ActionKind.ABORT_ROLLOUT:
            if int(st.get("availableReplicas") or 0) >= int(ro["spec"].get("replicas") or 0):
                await on_progress(f"aborted as asked: stable {st.get('stableRS')} serves every replica "
                                  f"({elapsed:.0f} s)", False)
                return Verification(ch.id, Outcome.PASS, "aborted as asked; stable serves every replica",
                                    rollout_seconds=elapsed, seconds=elapsed)
            await asyncio.sleep(poll_s)
            continue
        if st.get("abort"):
            why = await _abort_reason(k8s, t.namespace, new, st)
            step = int(st.get("currentStepIndex") or 0)
            extra = await compared(new)
            await on_progress(f"aborted at step {step + 1} after {elapsed:.0f} s: {why}; stable {old_stable} serves"
                              + extra, False)
            return Verification(ch.id, Outcome.REGRESSION, f"aborted by analysis at step {step + 1}: {why}{extra}",
                                rollout_seconds=elapsed, seconds=elapsed)
        if st.get("phase") == "Healthy" and st.get("stableRS") == new:
            extra = f"; during the canary: {figures}" if figures else ""
            await on_progress(f"promoted: 100 % on the new version {elapsed:.0f} s after the write{extra}", False)
            return Verification(ch.id, Outcome.PASS, f"promoted to 100 % (canary analysis passed){extra}",
                                rollout_seconds=elapsed, seconds=elapsed)
        index = int(st.get("currentStepIndex") or 0)
        steps = len(((ro.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or [])
        mark = (index, weight_at(ro, index))
        if mark != seen:
            seen = mark
            extra = await compared(new) if index > 0 and step_kind(ro, index - 1) == "analysis" else ""
            await on_progress(f"step {min(index + 1, steps)}/{steps} ({step_kind(ro, index)}): canary at {mark[1]} % "
                              f"({elapsed:.0f} s){extra}", True)
        paused = [c.get("reason") for c in st.get("pauseConditions") or []]
        if "InconclusiveAnalysis" in paused:
            await on_progress("paused: the analysis was inconclusive (no data); promote or abort it", True)
            return Verification(ch.id, Outcome.INCONCLUSIVE, "paused at step "
                                f"{index + 1}: analysis inconclusive; a human must promote or abort",
                                rollout_seconds=elapsed, seconds=elapsed)
        await asyncio.sleep(poll_s)
    return Verification(ch.id, Outcome.INCONCLUSIVE, f"not promoted within {deadline_s:.0f} s",
                        rollout_seconds=deadline_s, seconds=deadline_s)


async def _abort_reason(k8s: K8sReadClient, namespace: str, pod_hash: str, status: Mapping[str, Any]) -> str:
    custom = client.CustomObjectsApi(k8s.api)
    try:
        runs, _ = await k8s.list(f"list analysisruns in {namespace}", custom.list_namespaced_custom_object,
                                 GROUP, VERSION, namespace, "analysisruns",
                                 label_selector=f"rollouts-pod-template-hash={pod_hash}")
    except Exception as e:  # the abort stands; say why the detail is missing
        return f"{status.get('message') or 'aborted'} (analysis runs unreadable: {e})"
    failed = [f for r in runs for f in failed_metrics(r)]
    return "; ".join(failed) if failed else str(status.get("message") or "aborted")
