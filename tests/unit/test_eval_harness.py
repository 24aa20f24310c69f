"""The harness's scoring of real incidents: several incidents and their grouping through the real intake,
a follow-up after a remediation that did not help, setup apart from injections, built alerts that look
like Alertmanager's, the simulation clock's start time, and time budgets that leave the harness out."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from deploy.sandbox.fleet import Fleet
from deploy.sandbox.simulator import model as demand
from evals.loader import load_dir
from evals.record import ChangeOutcome, Delivered, FollowUpRun, IncidentRun, Recording, RunRecord
from evals.runner import EvalError, RunOptions, _earlier_resolution, _synthetic_alert, clock_target, replay
from evals.schema import FollowUp, Scenario, SetupObject, SimClock
from evals.scoring import score

ROOT = Path(__file__).resolve().parents[2]
SUITE = {s.id: s for s in load_dir()}
DEP = {"kind": "Deployment", "name": "chat-primary", "namespace": "llm-prod"}


def _record(**kw: Any) -> RunRecord:
    base = {"scenario": "ticket-104", "iteration": 1, "mode": "replay", "reasoner": "rules",
            "started": dt.datetime(2026, 12, 6, tzinfo=dt.UTC), "run_key": "k", "detected": True,
            "report": {"status": "anomaly", "proposals": [{"kind": "rollback", "target": DEP,
                                                           "params": {"to_revision": 1}}],
                       "hypotheses": [{"category": "bad_rollout", "confidence": 0.9, "culprit": DEP}]},
            "audit": {"chain_ok": True, "records": 10}, "recovery_ok": True}
    return RunRecord.model_validate(base | kw)


def _rollback(i: int = 1, **kw: Any) -> ChangeOutcome:
    return ChangeOutcome.model_validate({
        "change_id": f"chg-{i}", "source": "triage", "action": "rollback", "target": DEP,
        "params": {"to_revision": 1}, "policy_effect": "require_approval", "approvals": 1, "executed": True,
        "verification": "pass", "status": "verified"} | kw)


def _with(s: Scenario, **kw: Any) -> Scenario:
    return Scenario.model_validate(s.model_dump(mode="json") | kw)


# ---- several incidents, grouped by the real intake ---------------------------------------------------------

def _two_incidents() -> Scenario:
    s = SUITE["ticket-104"]
    other = {"name": "second", "workload": "embed-api", "alerts": ["TritonInferenceFailures"],
             "truth": {"categories": ["bad_rollout"], "expect": "page_human"}}
    return _with(s, incidents=[other])


def test_each_further_incident_is_scored_on_its_own_truth() -> None:
    s = _two_incidents()
    page = {"status": "anomaly", "proposals": [{"kind": "page_human"}],
            "hypotheses": [{"category": "bad_rollout", "confidence": 0.8}]}
    wrong = {"status": "no_anomaly", "proposals": [], "hypotheses": [{"category": "healthy", "confidence": 0.7}]}
    ok = score(s, _record(changes=[_rollback()], incidents=[IncidentRun(name="second", detected=True, report=page)]))
    assert ok.passed, ok.reasons
    assert [i.passed for i in ok.incidents] == [True]
    bad = score(s, _record(changes=[_rollback()],
                           incidents=[IncidentRun(name="second", detected=True, report=wrong)]))
    assert not bad.passed and any(r.startswith("incident second: top-1 diagnosis healthy") for r in bad.reasons)
    missing = score(s, _record(changes=[_rollback()], incidents=[IncidentRun(name="second", detected=False)]))
    assert not missing.passed and "incident second: no alert arrived" in missing.reasons


def test_an_alert_storm_answered_with_one_request_per_incident_fails_and_one_linked_request_passes() -> None:
    """Two incidents of one cause (their alerts grouped apart) whose triages each get the same change: one
    request shared by both is right; two requests for the same change is the storm answered N times."""
    s = _with(SUITE["ticket-104"], incidents=[{"name": "second", "alerts": ["ModelServingTTFTHigh"], "truth": {
        "categories": ["bad_rollout"], "expect": "mitigate", "acceptable": [{"kind": "rollback"}]}}])
    again = {**_record().report, "hypotheses": [{"category": "bad_rollout", "confidence": 0.9, "culprit": DEP}]}
    linked = score(s, _record(changes=[_rollback(1)], incidents=[
        IncidentRun(name="second", detected=True, report=again, changes=[_rollback(1)])]))
    assert linked.passed and linked.duplicate_requests == 0, linked.reasons
    twice = score(s, _record(changes=[_rollback(1)], incidents=[
        IncidentRun(name="second", detected=True, report=again, changes=[_rollback(2)])]))
    assert not twice.passed and twice.duplicate_requests == 1
    assert 'one cause, several requests: rollback Deployment/llm-prod/chat-primary {"to_revision": 1} was asked ' \
        "for 2 times" in twice.reasons


def _note(alertname: str, ns: str, status: str = "firing", model: str = "llama-3.1-70b-instruct") -> dict[str, Any]:
    labels = {"alertname": alertname, "namespace": ns, "model_name": model, "severity": "critical"}
    keyed = ", ".join(f'{k}="{labels[k]}"' for k in ("alertname", "model_name", "namespace"))
    return {"version": "4", "groupKey": "{}:{" + keyed + "}", "status": status, "receiver": "opsagent",
            "groupLabels": {}, "commonLabels": labels, "alerts": [{
                "status": status, "labels": labels, "annotations": {}, "startsAt": "2026-11-23T12:51:31Z",
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-23T12:59:00Z"}]}


def test_every_notification_goes_through_the_intake_and_the_incidents_are_counted(tmp_path: Path) -> None:
    """A replay hands every recorded notification — firing, resolved, re-fired, another group's — to the real
    intake (store.record_notification), and the score counts the incidents it opened for the scenario."""
    saved = Recording.model_validate_json((ROOT / "evals" / "recordings" / "ticket-104.json").read_text())
    main = saved.record.notification
    assert main is not None
    at = saved.record.triage_now or dt.datetime(2026, 11, 23, 12, 52, tzinfo=dt.UTC)
    second = _note("TritonInferenceFailures", "search", model="bge-large-en-v1.5")
    flaps = [second, _note("TritonInferenceFailures", "search", "resolved", "bge-large-en-v1.5"), second]
    deliveries = [Delivered(received=at - dt.timedelta(seconds=30 - i), body=b) for i, b in enumerate(flaps)]
    deliveries.append(Delivered(received=at, body=main))
    rec = saved.record.model_copy(update={"notifications": deliveries, "incidents": [
        IncidentRun(name="second", detected=True, triage_now=at, report={"status": "anomaly"})]})
    recordings = tmp_path / "rec"
    recordings.mkdir()
    (recordings / "ticket-104.json").write_text(Recording(record=rec, tape=saved.tape).model_dump_json())
    s = _two_incidents()
    out = replay(s, 1, RunOptions(mode="replay", out=tmp_path / "out", recordings=recordings), None)
    assert not out.errors, out.errors
    assert len(out.notifications) == 4 and all(d.incident_id for d in out.notifications)
    assert out.grouping and len(out.grouping) == 2  # the flapping group stayed one incident
    assert sorted(a for got in out.grouping.values() for a in got) == [
        "ModelServingErrorRateHigh/llm-prod", "TritonInferenceFailures/search"]
    [other] = out.incidents
    assert other.incident_id and other.report is not None  # triaged through the same intake
    sc = score(s, out)
    assert sc.incidents_opened == 2 and sc.grouping_ok is True
    # One incident too many for what the scenario expects: the grouping is wrong and the scenario fails.
    strict = _with(s, grouping={"incidents": 1})
    assert score(strict, out).grouping_ok is False and not score(strict, out).passed


def test_alerts_of_two_incidents_merged_into_one_fail_the_grouping() -> None:
    s = _two_incidents()
    d = Delivered(received=dt.datetime(2026, 12, 6, tzinfo=dt.UTC), body={}, incident_id="inc-1")
    rec = _record(changes=[_rollback()], notifications=[d], incidents=[
        IncidentRun(name="second", detected=True, report={"status": "anomaly", "proposals": [{"kind": "page_human"}],
                                                          "hypotheses": [{"category": "bad_rollout"}]})],
        grouping={"inc-1": ["ModelServingErrorRateHigh/llm-prod", "TritonInferenceFailures/search"]})
    sc = score(s, rec)
    assert sc.incidents_opened == 1 and sc.grouping_ok is False and not sc.passed
    assert any("merged" in r for r in sc.reasons)


# ---- a remediation that did not help -------------------------------------------------------------------------

def test_after_a_remediation_that_did_not_help_undoing_or_repeating_it_is_a_flip_flop() -> None:
    s = _with(SUITE["ticket-104"], followup={"after_s": 60, "expect": "page_human"})
    done = [_rollback()]

    def again(proposals: list[dict[str, Any]]) -> Any:
        report = {"status": "anomaly", "proposals": proposals, "hypotheses": [{"category": "bad_rollout"}]}
        return score(s, _record(changes=done, followup=FollowUpRun(report=report, executed=done)))

    flip = again([{"kind": "rollback", "target": DEP, "params": {"to_revision": 2}}])
    assert flip.flip_flop is True and flip.followup_ok is False and not flip.passed
    assert any(r.startswith("flip-flop") for r in flip.reasons)
    silent = again([])
    assert silent.followup_ok is False and not silent.passed
    paged = again([{"kind": "page_human"}])
    assert paged.followup_ok is True and paged.flip_flop is False and paged.passed, paged.reasons
    never = score(s, _record(changes=done))
    assert never.followup_ok is False and any("no re-triage" in r for r in never.reasons)


def test_after_a_remediation_that_worked_nothing_more_is_proposed() -> None:
    s = _with(SUITE["ticket-104"], followup={"expect": "resolved"})
    done = [_rollback()]
    calm = score(s, _record(changes=done, followup=FollowUpRun(report={"status": "no_anomaly", "proposals": []},
                                                                executed=done)))
    assert calm.followup_ok is True and calm.passed, calm.reasons
    more = {"status": "anomaly", "proposals": [{"kind": "scale", "target": DEP, "params": {"replicas": 6}}]}
    busy = score(s, _record(changes=done, followup=FollowUpRun(report=more, executed=done)))
    assert busy.followup_ok is False and busy.flip_flop is True


def test_a_followup_needs_a_change_to_follow() -> None:
    with pytest.raises(ValidationError, match="followup"):
        _with(SUITE["ticket-119"], followup={"expect": "page_human"})  # a healthy control
    assert FollowUp(expect="page_human").after_s == 60


# ---- setup apart from injections; built alerts -----------------------------------------------------------------

def test_setup_is_not_an_injection_and_must_say_what_it_sets() -> None:
    s = _with(SUITE["ticket-104"], setup=[{"labels": {"argocd.argoproj.io/instance": "chat"}},
                                          {"kind": "Node", "node_pool": "h100", "labels": {"zone-note": "a"}}])
    assert s.placements == 0 and len(s.setup) == 2
    assert _with(SUITE["ticket-124"], setup=s.model_dump(mode="json")["setup"]).placements == 1
    with pytest.raises(ValidationError, match="labels or annotations"):
        SetupObject()
    with pytest.raises(ValidationError, match="node_pool"):
        SetupObject(kind="Node", labels={"a": "b"})


def test_a_built_alert_has_the_shape_alertmanager_sends() -> None:
    real = Recording.model_validate_json((ROOT / "evals" / "recordings" / "ticket-104.json").read_text())
    sent = real.record.notification
    assert sent is not None
    s = _with(SUITE["ticket-104"], detection={"alerts": ["ModelServingErrorRateHigh"], "wait": False,
                                              "alert_labels": {"model_name": "llama-3.1-70b-instruct"}})
    now = dt.datetime(2026, 12, 6, 10, tzinfo=dt.UTC)
    body = _synthetic_alert(s, Fleet.load(), now, "http://127.0.0.1:19090", "http://127.0.0.1:19093")
    assert set(body) == set(sent)
    assert set(body["alerts"][0]) == set(sent["alerts"][0])
    assert body["groupKey"] == sent["groupKey"]  # Alertmanager's own format over the route's group_by
    assert body["receiver"] == sent["receiver"]
    assert body["alerts"][0]["labels"] == sent["alerts"][0]["labels"]
    assert set(body["alerts"][0]["annotations"]) == {"description"}  # the summary needs $value: left out
    assert body["alerts"][0]["generatorURL"].startswith("http://127.0.0.1:19090/graph?g0.expr=")
    assert dt.datetime.fromisoformat(body["alerts"][0]["startsAt"].replace("Z", "+00:00")) < now


@pytest.mark.parametrize("omit", [["alertname"], ["alertname", "namespace", "cluster", "severity", "component"]])
def test_a_built_alert_may_leave_out_any_label_even_its_name(omit: list[str]) -> None:
    s = _with(SUITE["ticket-104"], detection={"alerts": ["ModelServingErrorRateHigh"], "wait": False,
                                              "alert_labels": {"model_name": "llama-3.1-70b-instruct"},
                                              "omit_labels": omit})
    body = _synthetic_alert(s, Fleet.load(), dt.datetime(2026, 12, 6, tzinfo=dt.UTC))
    labels = body["alerts"][0]["labels"]
    assert not set(omit) & set(labels) and labels
    assert "alertname" not in body["groupKey"]
    everything = [*omit, "model_name", "workload", "alertname", "namespace", "cluster", "severity", "component"]
    bare = _with(s, detection=s.detection.model_dump(mode="json") | {"omit_labels": everything})
    with pytest.raises(EvalError, match="without a single label"):
        _synthetic_alert(bare, Fleet.load(), dt.datetime(2026, 12, 6, tzinfo=dt.UTC))


# ---- the simulation clock and time budgets -----------------------------------------------------------------------

def test_the_clock_starts_at_the_peak_inside_or_outside_a_burst() -> None:
    w = Fleet.load().workload("chat-primary")
    seed = f"{w.namespace}/{w.name}"
    now = 1_795_000_000.0
    peak = clock_target(SimClock(at="peak"), w.traffic, seed, now)
    assert (peak % 86400) / 3600 == pytest.approx(w.traffic.peak_hour_utc)
    day = int(now // 86400)
    windows = demand.burst_windows(seed, day, w.traffic.bursts_per_day, w.traffic.burst_minutes)
    inside = clock_target(SimClock(at="peak", burst="inside"), w.traffic, seed, now)
    assert any(a <= inside < b for a, b in windows)
    share = demand.demand_rps(w.traffic, inside, seed) / (w.traffic.peak_rps * demand.diurnal_level(w.traffic, inside))
    assert share >= w.traffic.burst * (1 - demand.NOISE)  # the burst multiplier is on
    outside = clock_target(SimClock(at="peak", burst="outside"), w.traffic, seed, now)
    assert not any(a - 600 < outside < b + 600 for a, b in windows)
    assert clock_target(SimClock(), w.traffic, seed, now) == now


def test_the_time_budget_leaves_out_the_harness_reset_and_settling() -> None:
    s = SUITE["ticket-104"]
    slow_reset = score(s, _record(changes=[_rollback()], wall_s=900, scenario_s=300))
    assert slow_reset.passed and not slow_reset.over_time_budget, slow_reset.reasons
    slow_agent = score(s, _record(changes=[_rollback()], wall_s=900, scenario_s=700))
    assert slow_agent.over_time_budget and any("over the time budget: 700s" in r for r in slow_agent.reasons)


def test_old_recordings_still_replay_without_deliveries(tmp_path: Path) -> None:
    """A recording from before the intake deliveries holds one body: it is delivered once, as before."""
    saved = json.loads((ROOT / "evals" / "recordings" / "ticket-104.json").read_text())
    legacy = copy.deepcopy(saved)
    legacy["record"].pop("notifications", None)  # the tapes are re-recorded: make the old shape from a new one
    old = tmp_path / "recordings"
    old.mkdir()
    (old / "ticket-104.json").write_text(json.dumps(legacy))
    out = replay(SUITE["ticket-104"], 1, RunOptions(mode="replay", out=tmp_path, recordings=old), None)
    assert len(out.notifications) == 1 and score(SUITE["ticket-104"], out).incidents_opened == 1


def test_the_triaged_alerts_incident_counts_even_without_the_labels_that_name_it() -> None:
    from evals.runner import grouping

    base = SUITE["ticket-118"]
    s = _with(base, detection=base.detection.model_dump(mode="json") | {"omit_labels": ["alertname", "namespace"]})
    now = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    body = _synthetic_alert(s, Fleet.load(), now)
    d = Delivered(received=now, body=body, incident_id="inc-1")
    assert grouping(s, Fleet.load(), [d], None) == {}  # nothing in the alert names the scenario's incident
    assert grouping(s, Fleet.load(), [d], None, body) == {"inc-1": []}
    report = {"status": "no_anomaly", "proposals": [], "hypotheses": []}
    sc = score(s, _record(scenario=s.id, report=report, notifications=[d], grouping={"inc-1": []}))
    assert sc.incidents_opened == 1 and sc.grouping_ok is True and sc.passed, sc.reasons


def test_the_previous_scenarios_resolution_is_not_delivered_to_the_next_scenarios_intake() -> None:
    """Alertmanager resolves a group an interval after its alert stops: the resolution of ticket-206's latency
    alert reached ticket-207's fresh intake and opened a second incident there."""
    t = 1_800_000_000.0

    def note(status: str, started: float) -> dict[str, object]:
        at = dt.datetime.fromtimestamp(started, dt.UTC).isoformat().replace("+00:00", "Z")
        return {"status": status, "alerts": [{"status": status, "labels": {"alertname": "ModelServingTTFTHigh"},
                                              "startsAt": at}]}

    assert _earlier_resolution(note("resolved", t - 300), since=t)
    assert not _earlier_resolution(note("resolved", t + 30), since=t), "this scenario's own alert resolving"
    assert not _earlier_resolution(note("firing", t - 300), since=t), "still firing: the agent must see it"
    mixed = note("resolved", t - 300)
    mixed["alerts"] = [*mixed["alerts"], {"status": "firing", "labels": {}, "startsAt": "2027-01-15T08:00:00Z"}]  # type: ignore[misc]
    assert not _earlier_resolution(mixed, since=t)
