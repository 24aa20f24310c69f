"""Canary deployments on the real Argo Rollouts controller, gated by the project's AnalysisTemplate.

A sandbox of its own (started with rollouts, on its own port range) runs the upstream controller
against the sandbox's API server; the simulator serves each pod's signals by the version it runs, and
the analysis reads them per pod-template hash from Prometheus. A good version must walk 10 % → 50 % →
100 % and be promoted; a bad one must be aborted at the first step with stable serving throughout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from deploy.sandbox import rollouts
from deploy.sandbox.cluster import api_client
from deploy.sandbox.fleet import LABEL_APP, LABEL_MODEL_VERSION, Fleet, pod_template
from deploy.sandbox.processes import _alive_as
from deploy.sandbox.sandbox import Sandbox, SandboxSettings
from tests.integration.conftest import PORT_BASE as SANDBOX_PORT_BASE
from tests.integration.conftest import one_start_at_a_time
from tests.integration.promql import query

PORT_BASE = int(os.environ.get("OPSAGENT_TEST_ROLLOUTS_PORT_BASE", str(SANDBOX_PORT_BASE + 1000)))
WORKLOAD = "assist-mini"
GOOD, BAD = "2025.09.0", "2025.08.0"  # fleet-rollouts.yaml / fleet.yaml: the bad one errs 8 %, TTFT 0.9 s


@pytest.fixture(scope="module")
def rsandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = SandboxSettings(dir=tmp_path_factory.mktemp("rollouts-sandbox"), port_base=PORT_BASE,
                               rollouts=True, history_days=0.5,
                               webhook_url=f"http://127.0.0.1:{PORT_BASE + 99}/alertmanager")
    sb = Sandbox(settings, progress=lambda m: print(f"[rollouts-sandbox] {m}", flush=True))
    try:
        with one_start_at_a_time(tmp_path_factory):
            status = sb.up()
    except Exception:
        sb.down()
        raise
    procs = sb.sup.procs()
    assert "argo-rollouts" in {p.name for p in procs}, "the controller runs under the Supervisor"
    yield status
    sb.down()
    left = [f"{p.name} (pid {p.pid})" for p in procs if _alive_as(p)]
    assert not left, f"processes left running after sandbox down: {left}"


@pytest.fixture(scope="module")
def radmin(rsandbox: dict[str, Any]) -> Iterator[client.ApiClient]:
    api = api_client(Path(rsandbox["kubeconfigs"]["admin"]))
    yield api
    api.close()


@pytest.fixture(scope="module")
def rfleet() -> Fleet:
    return rollouts.merged_fleet(Fleet.load())[0]


@dataclass
class Watch:
    """What was seen while a rollout ran: canary pod counts per version, steps, the stable hash."""

    max_pods: dict[str, int] = field(default_factory=dict)
    weights: list[int] = field(default_factory=list)
    stable_hashes: set[str] = field(default_factory=set)
    min_stable_ready: int = 10**6
    first_canary_at: float | None = None
    last_canary_at: float | None = None


def _rollout(api: client.ApiClient, ns: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        rollouts.GROUP, rollouts.VERSION, ns, "rollouts", WORKLOAD)
    return obj


def _deploy(api: client.ApiClient, fleet: Fleet, version: str) -> tuple[str, float]:
    w = fleet.workload(WORKLOAD)
    mv = fleet.version(w.model, version)
    assert mv is not None
    before = _rollout(api, w.namespace)
    template = pod_template(fleet, w, mv)
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        rollouts.GROUP, rollouts.VERSION, w.namespace, "rollouts", WORKLOAD, {"spec": {"template": template}})
    return str((before.get("status") or {}).get("stableRS") or ""), time.time()


def _observe(api: client.ApiClient, ns: str, version: str, w: Watch, stable_hash: str) -> dict[str, Any]:
    ro = _rollout(api, ns)
    st = ro.get("status") or {}
    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"{LABEL_APP}={WORKLOAD}").items
    live = [p for p in pods if not p.metadata.deletion_timestamp]
    new = [p for p in live if (p.metadata.labels or {}).get(LABEL_MODEL_VERSION) == version]
    w.max_pods[version] = max(w.max_pods.get(version, 0), len(new))
    if new:
        w.last_canary_at = time.time()
        w.first_canary_at = w.first_canary_at or w.last_canary_at
    stable_ready = sum(1 for p in live if (p.metadata.labels or {}).get("rollouts-pod-template-hash") == stable_hash
                       and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])))
    w.min_stable_ready = min(w.min_stable_ready, stable_ready)
    if st.get("stableRS"):
        w.stable_hashes.add(str(st["stableRS"]))
    if not st.get("currentPodHash") or st["currentPodHash"] == stable_hash:
        return ro  # the controller has not taken up the new template yet: its step index is the old one's
    weight = ((st.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight")
    if weight is None and st.get("currentStepIndex") is not None:
        weight = _weight_at(ro, int(st["currentStepIndex"]))
    if weight is not None and (not w.weights or w.weights[-1] != weight):
        w.weights.append(int(weight))
    return ro


def _weight_at(ro: dict[str, Any], index: int) -> int:
    steps = ro["spec"]["strategy"]["canary"]["steps"]
    weight = 0
    for s in steps[: index + 1]:
        weight = int(s.get("setWeight", weight))
    return 100 if index >= len(steps) else weight


def _served(prometheus: str, ns: str, canary_hash: str, start: float, end: float) -> tuple[float, float]:
    """Requests the canary's pods served, and all the workload's pods served, between start and end.

    The canary's counters start at zero with its pods, so their highest value is what they served
    (increase() would drop the first sample of a new series and flatter the canary); the other pods'
    counters run on, so theirs is the increase over the window.
    """
    window = f"{max(1, round(end - start))}s"
    sel = f'namespace="{ns}", pod=~"{WORKLOAD}-.*"'
    canary = query(prometheus, f'sum(max_over_time(http_requests_total{{{sel}, '
                               f'rollouts_pod_template_hash="{canary_hash}"}}[{window}]))', at=end)
    others = query(prometheus, f'sum(increase(http_requests_total{{{sel}, '
                               f'rollouts_pod_template_hash!="{canary_hash}"}}[{window}]))', at=end)
    bad = float(canary[0]["value"][1]) if canary else 0.0
    return bad, bad + (float(others[0]["value"][1]) if others else 0.0)


def test_a_good_version_walks_the_canary_steps_and_is_promoted(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet) -> None:
    ns = rfleet.workload(WORKLOAD).namespace
    stable_before, t0 = _deploy(radmin, rfleet, GOOD)
    seen = Watch()
    deadline = time.monotonic() + 420
    ro: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ro = _observe(radmin, ns, GOOD, seen, stable_before)
        st = ro.get("status") or {}
        if rollouts.phase(ro) == "Healthy" and st.get("stableRS") and st["stableRS"] != stable_before:
            break
        assert not st.get("abort"), f"the good version was aborted: {st.get('message')}"
        time.sleep(0.5)
    elapsed = time.time() - t0
    st = ro.get("status") or {}
    assert rollouts.phase(ro) == "Healthy" and st.get("stableRS") != stable_before, \
        f"not promoted within 420 s: phase {rollouts.phase(ro)}, status {st}"
    assert [x for x in seen.weights if x in (10, 50, 100)][:3] == [10, 50, 100], f"steps seen: {seen.weights}"
    pods = client.CoreV1Api(radmin).list_namespaced_pod(ns, label_selector=f"{LABEL_APP}={WORKLOAD}").items
    versions = {(p.metadata.labels or {}).get(LABEL_MODEL_VERSION) for p in pods if not p.metadata.deletion_timestamp}
    assert versions == {GOOD}, f"after promotion every pod runs {GOOD}: {versions}"
    print(f"\n[figure] good version {GOOD}: change applied → promoted at 100 % in {elapsed:.1f} s "
          f"(steps {seen.weights})")


def test_a_bad_version_is_aborted_by_analysis_at_the_first_step(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet) -> None:
    ns = rfleet.workload(WORKLOAD).namespace
    replicas = rfleet.workload(WORKLOAD).replicas
    stable_before, t0 = _deploy(radmin, rfleet, BAD)
    assert stable_before
    seen = Watch()
    deadline = time.monotonic() + 300
    ro: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ro = _observe(radmin, ns, BAD, seen, stable_before)
        if (ro.get("status") or {}).get("abort"):
            break
        time.sleep(0.5)
    st = ro.get("status") or {}
    assert st.get("abort"), f"the bad version was not aborted within 300 s: {st}"
    aborted_at = time.time()
    canary_hash = str(st.get("currentPodHash") or "")
    # Aborted at the first step's analysis: never beyond 10 %, one canary pod of ten at most.
    assert int(st.get("currentStepIndex", 99)) <= 1, f"aborted at step {st.get('currentStepIndex')}"
    assert max(seen.weights or [0]) <= 10, f"weights seen: {seen.weights}"
    assert seen.max_pods.get(BAD, 0) <= 1, f"bad version pods at most: {seen.max_pods}"
    assert seen.stable_hashes == {stable_before}, f"the stable ReplicaSet changed: {seen.stable_hashes}"
    assert "analysis" in str(st.get("message", "")).lower() or st.get("phase") == "Degraded", st
    # Stable scales back to every replica and the canary's pods go away.
    def settled() -> bool:
        _observe(radmin, ns, BAD, Watch(), stable_before)
        pods = client.CoreV1Api(radmin).list_namespaced_pod(ns, label_selector=f"{LABEL_APP}={WORKLOAD}").items
        live = [p for p in pods if not p.metadata.deletion_timestamp]
        return (sum(1 for p in live if p.metadata.labels.get("rollouts-pod-template-hash") == stable_before) == replicas
                and not any(p.metadata.labels.get(LABEL_MODEL_VERSION) == BAD for p in live))
    end = time.monotonic() + 120
    while not settled() and time.monotonic() < end:
        time.sleep(1)
    assert settled(), "after the abort, stable runs every replica and no bad pod is left"
    assert seen.min_stable_ready >= replicas - 1, f"stable dipped to {seen.min_stable_ready} Ready pods"
    # Requests the bad version served, against everything the workload served while it was exposed.
    time.sleep(12)  # two scrapes past the abort, so the counters' last samples are in
    start = (seen.first_canary_at or t0) - 5
    bad, total = _served(rsandbox["endpoints"]["prometheus"], ns, canary_hash, start, aborted_at + 10)
    assert total > 0, "Prometheus saw the workload's traffic"
    share = bad / total
    print(f"\n[figure] bad version {BAD}: aborted {aborted_at - t0:.1f} s after the change; it served "
          f"{bad:.0f} of {total:.0f} requests ({share:.1%}) while exposed")
    assert bad > 0, "the canary did serve (so the analysis had evidence)"
    assert share <= 0.10 * 1.1, f"the bad version served {share:.1%}, more than the first step's 10 %"


def test_the_staging_soak_query_reads_how_long_a_version_served_within_slo(
        rsandbox: dict[str, Any], radmin: client.ApiClient, rfleet: Fleet) -> None:
    from agent.change.preflight import staging_soak, staging_soak_queries
    from tests.integration.promql import query_range

    w = rfleet.workload(WORKLOAD)
    ro = _rollout(radmin, w.namespace)
    version = ro["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION]
    pods = client.CoreV1Api(radmin).list_namespaced_pod(w.namespace, label_selector=f"{LABEL_APP}={WORKLOAD}")
    serving = {(p.metadata.labels or {}).get(LABEL_MODEL_VERSION) for p in pods.items}
    stable = next(v for v in serving if v)  # after the tests above: the promoted version, the abort undone
    ttft_q, err_q = staging_soak_queries(w.namespace, WORKLOAD, stable, window="1m")
    prom = rsandbox["endpoints"]["prometheus"]
    end = time.time()
    start = end - 120

    def series(promql: str) -> dict[float, float]:
        res = query_range(prom, promql, start, end, 10)
        assert res, f"no data for {promql}"
        return {float(t): float(v) for t, v in res[0]["values"]}

    ttft, err = series(ttft_q), series(err_q)
    samples = [(t, ttft.get(t), err.get(t)) for t in sorted(ttft)]
    c = staging_soak(samples, ttft_p95_max_s=w.slo.ttft_p95_s, error_share_max=w.slo.error_rate,
                     required_s=60, now=end, step_s=10)
    assert c.ok, (c, version, serving)
    # The same query for a version nobody runs has no data, and no data is never soak.
    ttft_none, _ = staging_soak_queries(w.namespace, WORKLOAD, "1999.01.0", window="1m")
    assert not query_range(prom, ttft_none, start, end, 10)
    assert not staging_soak([], ttft_p95_max_s=1, error_share_max=1, required_s=60, now=end, step_s=10).ok
