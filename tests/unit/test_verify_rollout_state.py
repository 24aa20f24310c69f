"""The verifier's reading of a Deployment's rollout state, on Deployments as the API returns them.

A rollback of a rollout that had passed its progress deadline starts with the old
`ProgressDeadlineExceeded` condition still in the status: the controller keeps a timed-out condition
until the new ReplicaSet makes progress. Read as "stuck", it made the verifier call a good rollback a
regression at 0 s and roll it back (live eval ticket-202).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from agent.change.verify import rollout_state

APPLIED = dt.datetime(2026, 12, 6, 13, 50, 10, 700000, tzinfo=dt.UTC)


def _deployment(*, deadline_at: str | None, updated: int = 1, available: int = 1, generation: int = 9,
                observed: int = 9) -> dict[str, Any]:
    conditions = [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                   "lastUpdateTime": "2026-12-06T13:40:00Z"}]
    if deadline_at is not None:
        conditions.append({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                           "lastUpdateTime": deadline_at, "lastTransitionTime": deadline_at})
    return {"metadata": {"generation": generation}, "spec": {"replicas": 2},
            "status": {"observedGeneration": observed, "replicas": 2, "updatedReplicas": updated,
                       "availableReplicas": available, "conditions": conditions}}


def test_a_deadline_passed_before_the_change_is_not_the_change_stuck() -> None:
    done, state = rollout_state(_deployment(deadline_at="2026-12-06T13:49:30Z"), since=APPLIED)
    assert not done
    assert "stuck" not in state


def test_a_deadline_passed_after_the_change_is_the_change_stuck() -> None:
    done, state = rollout_state(_deployment(deadline_at="2026-12-06T13:53:10Z"), since=APPLIED)
    assert done and state.startswith("stuck")


def test_a_deadline_in_the_same_second_as_the_change_counts_as_the_changes() -> None:
    # The API's timestamps have whole seconds: 13:50:10 may be 13:50:10.9, after the change.
    done, state = rollout_state(_deployment(deadline_at="2026-12-06T13:50:10Z"), since=APPLIED)
    assert done and state.startswith("stuck")


def test_the_controller_not_yet_caught_up_is_waited_for() -> None:
    done, state = rollout_state(_deployment(deadline_at="2026-12-06T13:53:10Z", generation=10, observed=9),
                                since=APPLIED)
    assert (done, state) == (False, "waiting for the controller")


def test_a_rollback_onto_the_serving_replicas_completes() -> None:
    done, state = rollout_state(_deployment(deadline_at=None, updated=2, available=2), since=APPLIED)
    assert (done, state) == (True, "complete")
