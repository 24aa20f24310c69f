"""A mistaken route change, end to end: the HTTPRoute's weights edited through the real API move one model's
traffic onto another; the receiving server's requests, queue and KV cache rise in Prometheus while the other's
fall; the alert reaches the agent, whose triage blames the route (not a rollout, not capacity) and pages a human
with the weights to restore; `clear` restores them and the load goes back."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client

from agent import incidents
from agent.app import build_app
from agent.entry.commands.common import settings_for
from agent.models import ActionKind, Category
from deploy.sandbox import faults
from deploy.sandbox.fleet import ROUTE_GROUP, ROUTE_PLURAL, ROUTE_VERSION, Fleet
from deploy.sandbox.receiver import Notification, WebhookReceiver
from tests.integration.promql import query, scalar, wait_until

pytestmark = pytest.mark.usefixtures("clean_faults")

RPS = 'sum(rate(vllm:request_success_total{{namespace="{ns}", model_name="{model}"}}[30s]))'
KV = 'max(vllm:kv_cache_usage_perc{{namespace="{ns}", model_name="{model}"}})'


@pytest.fixture
def at_peak(sandbox: dict[str, Any], fleet: Fleet) -> Iterator[None]:
    """The simulation clock at the small model's daily peak (as a scenario's `clock: {at: peak}`): at 4 a.m.
    the whole route's traffic fits even the small model; the clock is back at real time afterwards."""
    w = fleet.workload(fleet.faults["traffic-shift"]["workload"])
    now = time.time()
    peak = int(now // 86400) * 86400 + w.traffic.peak_hour_utc * 3600
    sim = sandbox["endpoints"]["simulator"]
    httpx.put(f"{sim}/clock", json={"offset_s": peak - now}, timeout=10).raise_for_status()
    try:
        yield
    finally:
        httpx.put(f"{sim}/clock", json={"offset_s": 0.0}, timeout=10).raise_for_status()


def _weights(admin: client.ApiClient, ns: str, name: str) -> tuple[dict[str, int], int]:
    route = client.CustomObjectsApi(admin).get_namespaced_custom_object(ROUTE_GROUP, ROUTE_VERSION, ns,
                                                                         ROUTE_PLURAL, name)
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {r["name"]: r["weight"] for r in refs}, int(route["metadata"]["generation"])


def _rps(prom: str, ns: str, model: str) -> float:
    return scalar(prom, RPS.format(ns=ns, model=model)) or 0.0


def test_a_route_edit_moves_load_onto_the_small_model_triage_blames_the_route_and_clear_restores_it(
        sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, webhook: WebhookReceiver,
        at_peak: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    prom = sandbox["endpoints"]["prometheus"]
    route = fleet.route(fleet.faults["traffic-shift"]["route"])
    small = fleet.workload(fleet.faults["traffic-shift"]["workload"])
    big = next(fleet.workload(b.workload) for b in route.backends if b.workload != small.name)
    declared, generation = _weights(admin, route.namespace, route.name)
    assert declared == route.declared()
    wait_until(lambda: not query(prom, f'ALERTS{{alertname="KVCacheSaturated", namespace="{small.namespace}"}}'),
               480, "an earlier test's KVCacheSaturated to stop firing", interval=5)
    time.sleep(35)  # the clock moved: let the 30 s rates settle at the new hour's level
    before_small, before_big = _rps(prom, small.namespace, small.model), _rps(prom, big.namespace, big.model)
    assert before_small > 0 and before_big > 0

    t0 = time.time()
    record = faults.inject(admin, fleet, "traffic-shift")
    assert record["weights"] == {big.name: 10, small.name: 90}
    live, gen_after = _weights(admin, route.namespace, route.name)
    assert live == {big.name: 10, small.name: 90} and gen_after == generation + 1

    # What a real cluster shows: the small model serves far more (capped at its capacity), the big one far less,
    # and the small one's KV cache fills while requests queue.
    wait_until(lambda: _rps(prom, small.namespace, small.model) > 1.5 * before_small, 90,
               f"{small.name}'s requests to rise")
    wait_until(lambda: _rps(prom, big.namespace, big.model) < 0.5 * before_big, 90, f"{big.name}'s requests to fall")
    wait_until(lambda: (scalar(prom, KV.format(ns=small.namespace, model=small.model)) or 0) > 0.9, 90,
               f"{small.name}'s KV cache to fill")

    def alert(n: Notification) -> bool:
        return any(a["labels"].get("alertname") == "KVCacheSaturated"
                   and a["labels"].get("namespace") == small.namespace for a in n.alerts())
    note = webhook.wait_for(alert, timeout=240, since=t0)

    app = build_app(settings_for(None, sandbox, state_dir=str(tmp_path_factory.mktemp("route-state"))))
    try:
        incident, _ = app.store.record_notification(incidents.parse(json.dumps(note.body).encode()),
                                                    dt.datetime.now(dt.UTC))

        async def run() -> Any:
            try:
                return await app.triage(incident)
            finally:
                await app.aclose_clients()
        report = asyncio.run(run())
    finally:
        app.close()
    top = report.top
    assert top is not None and top.category == Category.ROUTING_SHIFT, report.summary
    assert top.culprit is not None and (top.culprit.kind, top.culprit.namespace, top.culprit.name) == (
        "HTTPRoute", route.namespace, route.name)
    said = " ".join(top.supporting)
    assert "90%" in said and "25%" in said and "kubectl-edit" in said, said  # what changed, and with what
    assert [p.kind for p in report.proposals] == [ActionKind.PAGE_HUMAN], report.proposals
    assert f"{big.name} 75, {small.name} 25" in report.proposals[0].reason  # the weights to restore
    assert all(h.category not in (Category.BAD_ROLLOUT, Category.CAPACITY) or h.confidence < 0.35
               for h in report.hypotheses)

    faults.clear(admin, fleet)
    assert _weights(admin, route.namespace, route.name)[0] == declared
    wait_until(lambda: (scalar(prom, KV.format(ns=small.namespace, model=small.model)) or 1) < 0.9, 120,
               f"{small.name}'s KV cache to drain after the weights were restored")
    wait_until(lambda: _rps(prom, big.namespace, big.model) > 0.7 * before_big, 90,
               f"{big.name}'s requests to come back")
