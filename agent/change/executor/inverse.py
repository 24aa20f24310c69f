"""The change that undoes an applied change, from what was recorded before it ran.

Used twice: the automatic rollback after a failed verification proposes it, and a proposal that is
exactly this inverse inherits the original's approval. Pure: it reads only the change request.
"""

from __future__ import annotations

from agent.change.models import ChangeRequest, ChangeSpec
from agent.models import ActionKind


def inverse(ch: ChangeRequest) -> ChangeSpec | None:
    """The change that undoes `ch`, from what was recorded before it ran; None when there is none."""
    t = ch.spec.target
    if t.kind == "Rollout" and ch.spec.action in (ActionKind.DEPLOY, ActionKind.SET_GPU_RESOURCES):
        # A Rollout keeps no revisions to roll back to by number: write the template it had before.
        prev = (ch.result.get("detail") or {}).get("previous")
        if not prev or not prev.get("container"):
            return None
        params = {"container": prev["container"], "labels": prev.get("labels") or {},
                  "node_selector": prev.get("node_selector") or {}, "tolerations": prev.get("tolerations") or [],
                  "change_cause": f"opsagent: undo {ch.id}"}
        params |= {k: prev[k] for k in ("image", "args", "gpus", "mig_profile") if prev.get(k) is not None}
        return ChangeSpec(action=ActionKind.DEPLOY, cluster=ch.spec.cluster, target=t, params=params)
    if t.kind != "Deployment":
        return None
    if ch.spec.action == ActionKind.SCALE:
        before = (ch.result.get("detail") or {}).get("from_replicas")
        if before is None:
            return None
        return ChangeSpec(action=ActionKind.SCALE, cluster=ch.spec.cluster, target=t, params={"replicas": int(before)})
    # A rollback that does not help is not undone (that would restore the version it rolled back from).
    if ch.spec.action in (ActionKind.DEPLOY, ActionKind.SET_GPU_RESOURCES) and ch.fingerprint.revision:
        return ChangeSpec(action=ActionKind.ROLLBACK, cluster=ch.spec.cluster, target=t,
                          params={"to_revision": int(ch.fingerprint.revision)})
    return None
