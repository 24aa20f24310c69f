"""One cause, one incident, however Alertmanager's route groups its alerts (ticket-206).

A broken rollout of one model fires an error-rate and a latency alert seconds apart; a route grouping by
alertname delivers them as two groups. The second group's alerts name the workload of the first's open
incident and started within `server.fold_window_s` of its episode, so they join it: one incident, one triage,
one change request. What must hold, on SQLite (the Python fold) and Postgres (`opsagent_record_alerts` and the
group-committed batch) alike: other workloads, alerts that name no workload and alerts outside the window stay
apart; the incident resolves only when every group's alerts did; a later episode follows the episode rules; and
two replicas receiving the two groups at the same moment open one incident, never two, and never deadlock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import incidents
from agent.entry.server import Replica, create_app
from agent.models import Incident, IncidentStatus
from agent.storage.db import is_postgres
from agent.storage.store import SqlStore
from tests.postgres import LocalPostgres
from tests.serving import serve

NOW = dt.datetime(2026, 11, 23, 8, 1, tzinfo=dt.UTC)
T0 = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
ZERO = "0001-01-01T00:00:00Z"


def alert(name: str, *, ns: str | None = "llm-prod", model: str | None = "chat-primary", fp: str | None = None,
          starts: dt.datetime = T0, status: str = "firing", ends: str = ZERO, **labels: str) -> dict[str, Any]:
    where = {k: v for k, v in (("namespace", ns), ("model_name", model)) if v is not None}
    return {"status": status, "labels": {"alertname": name, "severity": "critical", **where, **labels},
            "annotations": {"summary": f"{name} on {model}"}, "startsAt": starts.isoformat(), "endsAt": ends,
            "generatorURL": "", "fingerprint": fp or f"{name}-{ns}-{model}"}


def group_key(name: str, ns: str | None = "llm-prod", model: str | None = "chat-primary") -> str:
    """The key of a route that groups by alertname, namespace and model (the sandbox's, and a common one)."""
    return f'{{}}:{{alertname="{name}", model_name="{model or ""}", namespace="{ns or ""}"}}'


def note(name: str, *alerts: dict[str, Any], ns: str | None = "llm-prod", model: str | None = "chat-primary",
         status: str = "firing") -> incidents.Notification:
    return incidents.parse(json.dumps({
        "version": "4", "groupKey": group_key(name, ns, model), "status": status, "receiver": "opsagent",
        "alerts": list(alerts) or [alert(name, ns=ns, model=model)]}).encode())


def errors(ns: str = "llm-prod", model: str = "chat-primary", **kw: Any) -> incidents.Notification:
    return note("ModelServingErrorRateHigh", alert("ModelServingErrorRateHigh", ns=ns, model=model, **kw), ns=ns,
                model=model)


def latency(starts: dt.datetime = T0 + dt.timedelta(seconds=5), ns: str = "llm-prod", model: str = "chat-primary",
            **kw: Any) -> incidents.Notification:
    return note("ModelServingTTFTHigh", alert("ModelServingTTFTHigh", starts=starts, ns=ns, model=model, **kw),
                ns=ns, model=model)


def test_two_groups_naming_one_workload_are_one_incident_holding_both_alerts(db_target: str) -> None:
    store = SqlStore(db_target)
    first = store.record_alerts(errors(), NOW)
    second = store.record_alerts(latency(), NOW + dt.timedelta(seconds=5))
    assert second.incident_id == first.incident_id
    assert second.changed and not second.opened, "new evidence for the incident: it is triaged again"
    (inc,) = store.incidents()
    assert sorted(a.name for a in inc.alerts) == ["ModelServingErrorRateHigh", "ModelServingTTFTHigh"]
    assert inc.group_key == group_key("ModelServingErrorRateHigh")
    assert inc.folded_groups == [group_key("ModelServingTTFTHigh")]
    assert inc.notifications == 2 and inc.status == IncidentStatus.FIRING
    assert inc.title == "ModelServingErrorRateHigh +1 llm-prod/chat-primary"

    again = store.record_alerts(latency(), NOW + dt.timedelta(minutes=5))  # Alertmanager's repeat
    assert (again.incident_id, again.changed) == (first.incident_id, False)
    assert len(store.incidents()) == 1
    store.close()


def test_a_deployment_label_and_a_model_label_of_one_name_are_one_workload(db_target: str) -> None:
    store = SqlStore(db_target)
    first = store.record_alerts(errors(), NOW)
    stuck = incidents.parse(json.dumps({
        "version": "4", "groupKey": '{}:{alertname="ModelServerRolloutStuck"}', "status": "firing",
        "receiver": "opsagent", "alerts": [alert("ModelServerRolloutStuck", model=None, deployment="chat-primary",
                                                 starts=T0 + dt.timedelta(seconds=30))]}).encode())
    assert store.record_alerts(stuck, NOW).incident_id == first.incident_id
    store.close()


def test_groups_naming_different_workloads_stay_apart(db_target: str) -> None:
    store = SqlStore(db_target)
    a = store.record_alerts(errors(), NOW)
    other_model = store.record_alerts(latency(model="chat-small"), NOW)
    other_namespace = store.record_alerts(latency(ns="llm-staging"), NOW)
    assert len({a.incident_id, other_model.incident_id, other_namespace.incident_id}) == 3
    assert all(i.folded_groups == [] for i in store.incidents())
    store.close()


def test_alerts_that_name_no_workload_never_join_another_group(db_target: str) -> None:
    store = SqlStore(db_target)
    first = store.record_alerts(errors(), NOW)
    # A pod's alert in the same namespace, a node's, and a group whose alerts name two workloads.
    pod = note("ModelServerCrashLooping", alert("ModelServerCrashLooping", model=None, pod="chat-primary-7d9f-x"))
    node = note("GPUXidError", alert("GPUXidError", ns=None, model=None, Hostname="gpu-h100-0"), ns=None, model=None)
    mixed = note("KVCacheSaturated", alert("KVCacheSaturated", fp="kv-1"),
                 alert("KVCacheSaturated", model="chat-small", fp="kv-2"))
    others = [store.record_alerts(n, NOW) for n in (pod, node, mixed)]
    assert all(r.opened for r in others)
    assert len({first.incident_id, *(r.incident_id for r in others)}) == 4
    # An incident opened by alerts naming no workload is never joined either.
    only_ns = note("GPUPodsPending", alert("GPUPodsPending", model=None), model=None)
    pending = store.record_alerts(only_ns, NOW)
    assert store.record_alerts(latency(model="chat-small"), NOW).incident_id != pending.incident_id
    assert len(store.incidents()) == 6
    store.close()


def test_a_group_starting_outside_the_window_opens_its_own_incident(db_target: str) -> None:
    store = SqlStore(db_target)  # server.fold_window_s: 600 by default
    first = store.record_alerts(errors(), NOW)
    late = store.record_alerts(latency(starts=T0 + dt.timedelta(seconds=660)), NOW + dt.timedelta(seconds=700))
    assert late.opened and late.incident_id != first.incident_id
    earlier = store.record_alerts(note("KVCacheSaturated", alert("KVCacheSaturated", starts=T0 - dt.timedelta(
        seconds=601))), NOW)
    assert earlier.opened, "the window counts before the episode as after it"
    store.close()

    wide = SqlStore(db_target if is_postgres(db_target) else str(Path(db_target).with_name("wide.db")),
                    fold_window_s=900)
    one = wide.record_alerts(errors(ns="llm-wide"), NOW)
    two = wide.record_alerts(latency(ns="llm-wide", starts=T0 + dt.timedelta(seconds=660)),
                             NOW + dt.timedelta(seconds=700))
    assert two.incident_id == one.incident_id, "a wider server.fold_window_s folds it"
    wide.close()


def test_one_groups_resolution_leaves_the_incident_firing_while_the_others_alert_fires(db_target: str) -> None:
    store = SqlStore(db_target)
    first = store.record_alerts(errors(), NOW)
    store.record_alerts(latency(), NOW + dt.timedelta(seconds=5))
    ended = (T0 + dt.timedelta(minutes=3)).isoformat()
    one = store.record_alerts(note("ModelServingErrorRateHigh", alert(
        "ModelServingErrorRateHigh", status="resolved", ends=ended), status="resolved"), NOW + dt.timedelta(minutes=3))
    assert (one.incident_id, one.status) == (first.incident_id, IncidentStatus.FIRING), "the latency alert fires"
    inc = store.incident(first.incident_id)
    assert inc is not None and inc.status == IncidentStatus.FIRING
    assert [x.id for x in store.needing_triage()] == [first.incident_id]

    both = store.record_alerts(note("ModelServingTTFTHigh", alert(
        "ModelServingTTFTHigh", starts=T0 + dt.timedelta(seconds=5), status="resolved", ends=ended),
        status="resolved"), NOW + dt.timedelta(minutes=4))
    assert (both.incident_id, both.status) == (first.incident_id, IncidentStatus.RESOLVED)
    store.close()


def test_a_folded_group_firing_again_follows_the_episode_rules(db_target: str) -> None:
    store = SqlStore(db_target)
    first = store.record_alerts(errors(), NOW)
    store.record_alerts(latency(), NOW + dt.timedelta(seconds=5))
    ended = (T0 + dt.timedelta(minutes=3)).isoformat()
    for name, starts in (("ModelServingErrorRateHigh", T0), ("ModelServingTTFTHigh", T0 + dt.timedelta(seconds=5))):
        store.record_alerts(note(name, alert(name, starts=starts, status="resolved", ends=ended), status="resolved"),
                            NOW + dt.timedelta(minutes=3))
    # Within the flap window the folded group's alert firing again reopens the incident it joined.
    flap = store.record_alerts(latency(starts=T0 + dt.timedelta(minutes=10)), NOW + dt.timedelta(minutes=10))
    assert (flap.incident_id, flap.opened, flap.status) == (first.incident_id, False, IncidentStatus.FIRING)
    inc = store.incident(first.incident_id)
    assert inc is not None and inc.reopened == 1
    store.record_alerts(note("ModelServingTTFTHigh", alert(
        "ModelServingTTFTHigh", starts=T0 + dt.timedelta(minutes=10), status="resolved",
        ends=(T0 + dt.timedelta(minutes=12)).isoformat()), status="resolved"), NOW + dt.timedelta(minutes=12))
    # Long after: a new episode, a new incident, which the other group's alert then joins.
    later = T0 + dt.timedelta(hours=3)
    again = store.record_alerts(latency(starts=later), NOW + dt.timedelta(hours=3))
    assert again.opened and again.incident_id != first.incident_id
    joined = store.record_alerts(errors(starts=later + dt.timedelta(seconds=20)), NOW + dt.timedelta(hours=3))
    assert (joined.incident_id, joined.opened) == (again.incident_id, False)
    assert len(store.incidents()) == 2
    store.close()


@pytest.fixture
def pg_target(postgres: LocalPostgres) -> str:
    return postgres.create_database()


def test_two_replicas_receiving_the_two_groups_at_once_open_one_incident(pg_target: str) -> None:
    """Each replica takes its own group's lock; without a lock on the workload both would find no open
    incident and open one each. Many rounds, each on a new workload, both deliveries released together."""
    stores = [SqlStore(pg_target, pool_size=2), SqlStore(pg_target, pool_size=2)]
    rounds = 60
    for r in range(rounds):
        gate = threading.Barrier(2)
        got: dict[int, str] = {}

        def deliver(k: int, r: int = r, gate: threading.Barrier = gate, got: dict[int, str] = got) -> None:
            n = errors(model=f"m-{r}") if k == 0 else latency(model=f"m-{r}")
            gate.wait()
            got[k] = stores[k].record_alerts(n, NOW).incident_id

        threads = [threading.Thread(target=deliver, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert got[0] == got[1], f"round {r}: two incidents for one workload"
    found = stores[0].incidents(limit=1000)
    assert len(found) == rounds and all(len(i.alerts) == 2 and len(i.folded_groups) == 1 for i in found)
    for s in stores:
        s.close()


def test_two_replicas_batching_both_groups_of_many_workloads_converge_and_never_deadlock(pg_target: str) -> None:
    """Group commit: each replica's batch holds many groups' and workloads' locks at once. One replica gets
    every workload's error-rate group, the other every latency group, in opposite orders; the batch takes all
    its locks in one order first, so neither waits on the other in a cycle (Postgres would abort one)."""
    stores = [SqlStore(pg_target), SqlStore(pg_target)]
    workloads, rounds = 30, 3
    errors_seen: list[BaseException] = []
    start = threading.Barrier(2)

    def replica(k: int) -> None:
        order = list(range(workloads)) if k == 0 else list(reversed(range(workloads)))

        async def deliver() -> None:
            for r in range(rounds):
                at = NOW + dt.timedelta(seconds=r)
                await asyncio.gather(*(stores[k].arecord_alerts(
                    errors(model=f"w-{w}", fp=f"e-{w}-{r}") if k == 0 else latency(model=f"w-{w}", fp=f"l-{w}-{r}"),
                    at) for w in order))

        try:
            start.wait()
            asyncio.run(deliver())
        except BaseException as e:  # reported below
            errors_seen.append(e)

    threads = [threading.Thread(target=replica, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors_seen == []
    assert [s.intake.stats.failed_batches for s in stores] == [0, 0], "a batch was aborted (deadlock) and re-run"
    found = stores[0].incidents(limit=1000)
    assert len(found) == workloads, "one incident per workload"
    for inc in found:
        w = inc.alerts[0].labels["model_name"]
        assert sorted(a.fingerprint for a in inc.alerts) == sorted(
            [f"e-{w[2:]}-{r}" for r in range(rounds)] + [f"l-{w[2:]}-{r}" for r in range(rounds)])
    for s in stores:
        s.close()


def test_a_folded_group_triggers_a_triage_of_the_incident_it_joined(tmp_path: Path) -> None:
    store = SqlStore(tmp_path / "db.sqlite")
    triaged: list[Incident] = []

    async def triage(incident: Incident) -> None:
        triaged.append(incident)

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(triaged) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    def post(url: str, n: incidents.Notification) -> dict[str, Any]:
        r = httpx.post(f"{url}/alertmanager", content=n.model_dump_json())
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    # The re-triage is debounced (server.retriage_debounce_s) as for a new alert of the incident's own group.
    with serve(create_app(store, triage, replica=Replica(sweep_s=None, retriage_debounce_s=0.5))) as url:
        first = post(url, errors())
        wait_for(1)
        second = post(url, latency())
        assert second["incident"] == first["incident"] and second["changed"] is True
        wait_for(2)
    assert [i.id for i in triaged] == [first["incident"]] * 2
    assert len(triaged[1].alerts) == 2, "the second triage sees the folded alert"
    assert len(store.incidents()) == 1
    store.close()
