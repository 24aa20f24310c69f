"""Deployment scenarios: the schema refuses half-specified ones, and the scorer fails what a user would."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from evals.loader import load_dir
from evals.record import AuditFacts, ChangeOutcome, DeployRun, Mutation, RunRecord
from evals.schema import Scenario
from evals.scoring import aggregate, score

SUITE = {s.id: s for s in load_dir() if s.deploy is not None}


def _record(s: Scenario, run: DeployRun, **kw: Any) -> RunRecord:
    return RunRecord(scenario=s.id, iteration=1, mode="live", reasoner="rules", started=dt.datetime.now(dt.UTC),
                     run_key="k", deploy=run, audit=AuditFacts(chain_ok=True, records=5), scenario_s=30, **kw)


def _executed(stage: str, verification: str) -> ChangeOutcome:
    return ChangeOutcome(change_id="chg-1", source="triage", action="deploy", policy_effect="require_approval",
                         target={"kind": "Rollout", "name": "assist-mini", "namespace": "llm-prod"}, approvals=2,
                         executed=True, stage=stage, status=stage, verification=verification.split(":")[0],
                         verification_detail=verification)


def test_the_suite_has_the_four_deployment_outcomes_with_neutral_names() -> None:
    assert {s.deploy.expect for s in SUITE.values() if s.deploy} == {"promoted", "aborted", "refused", "patch"}
    for s in SUITE.values():
        assert s.truth is None and not s.faults and s.id.startswith("ticket-3")
        assert not any(w in s.description.lower() for w in ("bad", "good", "abort", "refuse", "gitops", "fit"))


def test_a_scenario_is_an_incident_or_a_deployment_never_both_nor_neither() -> None:
    base = SUITE["ticket-302"].model_dump(mode="json", exclude_none=True)
    with pytest.raises(ValidationError, match="exactly one of truth"):
        Scenario.model_validate({**base, "deploy": None})
    with pytest.raises(ValidationError, match="names the refusal text"):
        Scenario.model_validate({**base, "deploy": {"version": "1.0", "expect": "refused"}})
    with pytest.raises(ValidationError, match="max_exposure judges an aborted canary only"):
        Scenario.model_validate({**base, "deploy": {"version": "1.0", "expect": "promoted", "max_exposure": 0.1}})


def test_an_abort_passes_only_at_the_first_step_within_its_exposure_and_with_stable_untouched() -> None:
    s = SUITE["ticket-301"]
    ok = DeployRun(target="llm-prod/assist-mini", outcome="aborted", weights=[10], served_new=20, served_total=300,
                   stable_before="a", stable_after="a")
    aborted = _executed("rolled_back", "regression: rollout aborted by analysis at step 1")
    assert score(s, _record(s, ok, changes=[aborted])).passed
    for bad, why in ((ok.model_copy(update={"served_new": 60}), "exposure 20.0%"),
                     (ok.model_copy(update={"weights": [10, 50]}), "went past its first step"),
                     (ok.model_copy(update={"weights": []}), "no canary step was seen"),
                     (ok.model_copy(update={"stable_after": "b"}), "stable ReplicaSet changed"),
                     (ok.model_copy(update={"outcome": "promoted"}), "expected aborted")):
        sc = score(s, _record(s, bad, changes=[aborted]))
        assert not sc.passed and any(why in r for r in sc.reasons), (why, sc.reasons)


def test_a_promotion_needs_verification_and_a_new_stable() -> None:
    s = SUITE["ticket-302"]
    run = DeployRun(target="llm-prod/assist-mini", outcome="promoted", weights=[10, 50, 100], stable_before="a",
                    stable_after="b")
    good = _executed("verified", "pass: rollout promoted to 100 %")
    assert score(s, _record(s, run, changes=[good])).passed
    sc = score(s, _record(s, run.model_copy(update={"stable_after": "a"}), changes=[good]))
    assert not sc.passed and "nothing was promoted" in " ".join(sc.reasons)
    sc = score(s, _record(s, run, changes=[good], mutations=[Mutation(object="rollout/llm-prod/other",
                                                                      before={"generation": 1},
                                                                      after={"generation": 2})]))
    assert not sc.passed and sc.unapproved_mutations == 1


def test_a_refusal_must_show_its_numbers_make_no_change_request_and_be_audited() -> None:
    s = SUITE["ticket-303"]
    reasons = ["GPU memory: llama-3.1-70b-instruct at TP 1 does not fit 24 GiB GPUs: 131.5 GiB of weights per GPU"]
    run = DeployRun(target="llm-prod/assist-mini", outcome="refused", http_status=422, reasons=reasons,
                    refusal_audited=True)
    assert score(s, _record(s, run)).passed
    for bad, why in ((run.model_copy(update={"reasons": ["GPU memory: does not fit"]}), "does not show"),
                     (run.model_copy(update={"stored_changes": 1}), "made 1 change request"),
                     (run.model_copy(update={"refusal_audited": False}), "not in the audit")):
        sc = score(s, _record(s, bad))
        assert not sc.passed and any(why in r for r in sc.reasons), (why, sc.reasons)


def test_a_gitops_owned_target_passes_with_a_patch_and_no_write() -> None:
    s = SUITE["ticket-304"]
    run = DeployRun(target="llm-prod/assist-mini", outcome="patch", diff="+        model-version: 2025.10.1\n")
    assert score(s, _record(s, run)).passed
    sc = score(s, _record(s, run, mutations=[Mutation(object="rollout/llm-prod/assist-mini",
                                                      before={"generation": 1}, after={"generation": 2},
                                                      explained_by="chg-1")]))
    assert not sc.passed and "written directly" in " ".join(sc.reasons)
    figures = aggregate([score(s, _record(s, run))])
    assert figures["diagnosis_top1_category"] is None and figures["categories_missed"] == []


def test_replay_re_decides_the_recorded_preflight_and_notices_when_it_now_decides_otherwise(tmp_path: Any) -> None:
    import json

    from evals.runner import RunOptions, recording_path, replay

    s = SUITE["ticket-303"]
    opts = RunOptions(mode="replay", out=tmp_path / "out")
    rec = replay(s, 1, opts, None)
    assert score(s, rec).passed, score(s, rec).reasons
    assert rec.deploy is not None and any("does not fit 24 GiB GPUs" in r for r in rec.deploy.reasons)
    # The same request on nodes with 192 GiB GPUs fits: a replay whose preflight now passes is a failure.
    doc = json.loads(recording_path(opts.recordings, s.id).read_text())
    for n in doc["record"]["deploy"]["preflight_inputs"]["nodes"]:
        if n["metadata"]["labels"].get("nvidia.com/gpu.memory"):
            n["metadata"]["labels"]["nvidia.com/gpu.memory"] = str(192 * 1024)
    changed = tmp_path / "recordings"
    changed.mkdir()
    recording_path(changed, s.id).write_text(json.dumps(doc))
    rec = replay(s, 1, RunOptions(mode="replay", out=tmp_path / "out2", recordings=changed), None)
    sc = score(s, rec)
    assert not sc.passed and any("the preflight now says pass (recorded: refuse)" in r for r in sc.reasons)
