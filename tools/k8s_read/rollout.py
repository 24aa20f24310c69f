"""A Deployment's rollout history from its ReplicaSets: what each revision ran and when it took over.

This is the evidence for "the regression started at revision N": each revision's images, model
version, change cause, creation time and what changed against the revision before it. A rollback
(`kubectl rollout undo`) reuses an old ReplicaSet under a new revision number; its creation time is
then old, so the time it took over is estimated from the Deployment's Progressing condition, and
`reused_revisions` says which numbers it had before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import Field

from tools.base import UntrustedStr
from tools.k8s_read.reduction import Condition, ModelLabels, Out, clip, conditions, model_labels, parse_time
from tools.k8s_read.workloads import REVISION_ANNOTATION

CHANGE_CAUSE = "kubernetes.io/change-cause"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"


class RevisionInfo(Out):
    revision: int
    replicaset: str
    created_at: dt.datetime | None = None
    current: bool = False
    images: list[UntrustedStr]
    labels: ModelLabels
    version: UntrustedStr = Field(description="model-version label if set, else the first image.")
    change_cause: UntrustedStr | None = None
    replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    reused_revisions: list[int] = Field(default_factory=list,
                                        description="Earlier revision numbers of this ReplicaSet (it was rolled "
                                                    "back to).")
    changes: list[UntrustedStr] = Field(default_factory=list,
                                        description="What differs from the previous revision: image, model version, "
                                                    "args, resources.")


class RolloutHistory(Out):
    namespace: str
    deployment: str
    observed_at: dt.datetime
    current_revision: int | None = None
    previous_revision: int | None = None
    current_version: UntrustedStr | None = None
    previous_version: UntrustedStr | None = None
    changed_at: dt.datetime | None = Field(default=None,
                                           description="When the current revision took over (its ReplicaSet's "
                                                       "creation, or the rollout's last progress for a rollback).")
    changed_at_estimated: bool = False
    changed_ago_s: float | None = None
    revisions_total: int
    paused: bool = False
    replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    unavailable_replicas: int = 0
    rollout_complete: bool = False
    progressing: Condition | None = None
    revisions: list[RevisionInfo] = Field(description="Newest first.")


def _revision(rs: Mapping[str, Any]) -> int | None:
    value = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
    return int(value) if value is not None and str(value).isdigit() else None


def _template(rs: Mapping[str, Any]) -> Mapping[str, Any]:
    return (rs.get("spec") or {}).get("template") or {}


def owned_by(replicasets: Iterable[Mapping[str, Any]], deployment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    uid = (deployment.get("metadata") or {}).get("uid")
    return [rs for rs in replicasets
            if any(o.get("uid") == uid and o.get("kind") == "Deployment"
                   for o in (rs.get("metadata") or {}).get("ownerReferences") or [])]


def revisions_by_hash(replicasets: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """pod-template-hash → revision, to tell which revision a pod belongs to."""
    out: dict[str, int] = {}
    for rs in replicasets:
        labels = (rs.get("metadata") or {}).get("labels") or {}
        rev = _revision(rs)
        if rev is not None and labels.get("pod-template-hash"):
            out[str(labels["pod-template-hash"])] = rev
    return out


def _diff(new: Mapping[str, Any], old: Mapping[str, Any], limit: int) -> list[str]:
    """What changed in a pod template between two revisions, in a few phrases."""
    changes: list[str] = []
    new_labels = (new.get("metadata") or {}).get("labels") or {}
    old_labels = (old.get("metadata") or {}).get("labels") or {}
    if new_labels.get("model-version") != old_labels.get("model-version"):
        changes.append(f"model-version {old_labels.get('model-version')} → {new_labels.get('model-version')}")
    new_c = {c.get("name"): c for c in (new.get("spec") or {}).get("containers") or []}
    old_c = {c.get("name"): c for c in (old.get("spec") or {}).get("containers") or []}
    for name, c in new_c.items():
        o = old_c.get(name)
        if o is None:
            changes.append(f"container {name} added")
            continue
        if c.get("image") != o.get("image"):
            changes.append(f"{name} image {o.get('image')} → {c.get('image')}")
        if (c.get("args") or []) != (o.get("args") or []) or (c.get("command") or []) != (o.get("command") or []):
            removed = [a for a in o.get("args") or [] if a not in (c.get("args") or [])]
            added = [a for a in c.get("args") or [] if a not in (o.get("args") or [])]
            changes.append(clip(f"{name} args changed: -{removed} +{added}", limit))
        if (c.get("resources") or {}) != (o.get("resources") or {}):
            changes.append(clip(f"{name} resources {o.get('resources')} → {c.get('resources')}", limit))
        if (c.get("env") or []) != (o.get("env") or []):
            changes.append(f"{name} env changed")
    changes.extend(f"container {name} removed" for name in old_c.keys() - new_c.keys())
    return changes


def rollout_history(deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]], *,
                    now: dt.datetime, limit: int, max_revisions: int = 10) -> RolloutHistory:
    """The rollout history of `deployment` from the ReplicaSets it owns."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    owned = sorted(((rev, rs) for rs in owned_by(replicasets, deployment) if (rev := _revision(rs)) is not None),
                   key=lambda x: x[0], reverse=True)
    dep_rev = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
    current_rev = int(dep_rev) if dep_rev and str(dep_rev).isdigit() else (owned[0][0] if owned else None)
    revisions: list[RevisionInfo] = []
    for i, (rev, rs) in enumerate(owned):
        rs_meta = rs.get("metadata") or {}
        rs_status = rs.get("status") or {}
        template = _template(rs)
        tmeta = template.get("metadata") or {}
        images = [str(c.get("image", "")) for c in (template.get("spec") or {}).get("containers") or []]
        labels = model_labels(tmeta.get("labels"))
        history = str((rs_meta.get("annotations") or {}).get(REVISION_HISTORY, ""))
        prev = owned[i + 1][1] if i + 1 < len(owned) else None
        revisions.append(RevisionInfo(
            revision=rev,
            replicaset=str(rs_meta.get("name", "")),
            created_at=parse_time(rs_meta.get("creationTimestamp")),
            current=rev == current_rev,
            images=images,
            labels=labels,
            version=labels.model_version or (images[0] if images else "unknown"),
            change_cause=clip((rs_meta.get("annotations") or {}).get(CHANGE_CAUSE), limit) or None,
            replicas=int(rs_status.get("replicas") or 0),
            ready_replicas=int(rs_status.get("readyReplicas") or 0),
            available_replicas=int(rs_status.get("availableReplicas") or 0),
            reused_revisions=[int(x) for x in history.split(",") if x.strip().isdigit()],
            changes=_diff(template, _template(prev), limit) if prev is not None else [],
        ))
    current = next((r for r in revisions if r.current), None)
    previous = next((r for r in revisions if current is not None and r.revision < current.revision), None)
    conds = conditions(status.get("conditions"), limit)
    progressing = next((c for c in conds if c.type == "Progressing"), None)
    changed_at, estimated = None, False
    if current is not None:
        changed_at = current.created_at
        if current.reused_revisions:
            # A rolled-back ReplicaSet keeps its old creation time; the last rollout progress is closer.
            raw: Mapping[str, Any] = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
            changed_at = parse_time(raw.get("lastUpdateTime")) or changed_at
            estimated = True
    desired = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    observed = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    return RolloutHistory(
        namespace=str(meta.get("namespace", "")),
        deployment=str(meta.get("name", "")),
        observed_at=now,
        current_revision=current.revision if current else current_rev,
        previous_revision=previous.revision if previous else None,
        current_version=current.version if current else None,
        previous_version=previous.version if previous else None,
        changed_at=changed_at,
        changed_at_estimated=estimated,
        changed_ago_s=round((now - changed_at).total_seconds(), 1) if changed_at else None,
        revisions_total=len(revisions),
        paused=bool(spec.get("paused")),
        replicas=desired,
        updated_replicas=updated,
        available_replicas=available,
        unavailable_replicas=int(status.get("unavailableReplicas") or max(desired - available, 0)),
        rollout_complete=observed and updated >= desired and available >= desired,
        progressing=progressing,
        revisions=revisions[:max_revisions],
    )
