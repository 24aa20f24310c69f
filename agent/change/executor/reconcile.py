"""After a crash or a second claim: did the write land, and is a claim still fresh?

Pure helpers for `Executor._reconcile`, which compares the live object with the spec hashes the ledger
recorded before the write.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from agent.change.models import ChangeSpec, TargetFingerprint
from tools.k8s_write.ops import spec_hash


def fp_key(fp: TargetFingerprint) -> dict[str, Any]:
    return {"uid": fp.uid, "spec_hash": fp.spec_hash}  # what `TargetFingerprint.same_as` compares


def intended_hash(result: Any) -> str:
    return str(getattr(result, "spec_hash", "") or "")


def landed(spec: ChangeSpec, obj: dict[str, Any], intended: str) -> bool:
    """Did the change's write reach the object? Nodes get a taint added by the node controller after a
    cordon, so for them only the field the change sets is compared."""
    if spec.target.kind == "Node":
        return bool(obj.get("spec", {}).get("unschedulable"))
    return bool(intended) and spec_hash(obj) == intended


def pod_replaced(obj: dict[str, Any] | None, uid: str) -> bool:
    """Did a pod restart's delete land? The pod it named (by uid) is gone, replaced under the same name, or
    terminating. A delete leaves no spec to compare, so the uid is what tells."""
    if obj is None:
        return True
    meta = obj.get("metadata") or {}
    return meta.get("uid") != uid or bool(meta.get("deletionTimestamp"))


def recent(iso: str, seconds: float) -> bool:
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(iso)).total_seconds() < seconds
