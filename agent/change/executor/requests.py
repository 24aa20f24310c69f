"""What the executor sends: the write tool call for a change, and the policy request it is judged by.

Both are built from plain values in one place, so the proposal and the execution re-check ask policy
the same question. Pure: no API calls, no ledger reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from agent.change.executor.blast_radius import replicas_delta
from agent.change.models import BlastRadius, ChangeSpec
from agent.models import ActionKind
from agent.policy.model import Request

# What a deploy may write (the write tool's fields) and what it may only carry as a record (how it was
# planned and priced; never sent to the cluster). Anything else in a deploy's parameters is refused,
# not dropped: a forged or garbled plan that slips in `resources`, `cpu` or a privileged field fails
# its dry run and is never approved.
DEPLOY_WRITES = ("container", "image", "args", "labels", "gpus", "mig_profile", "node_selector", "tolerations",
                 "change_cause")
DEPLOY_RECORDS = frozenset({"strategy", "instance_type", "new_instance_type", "recommendation", "gpu_class_move",
                            "max_surge"})


def tool_call(spec: ChangeSpec, dry_run: bool, expected_rv: str | None,
              evict_namespaces: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """The guarded write tool and its parameters that carry out `spec` (a dry run or the real write); a
    drain evicts only from `evict_namespaces` (the policy's drain namespaces)."""
    t = spec.target
    base: dict[str, Any] = {"dry_run": dry_run, "expected_resource_version": expected_rv}
    p = spec.params
    match spec.action:
        case ActionKind.ROLLBACK:
            return "k8s_rollout_undo", base | {"namespace": t.namespace, "name": t.name,
                                                "to_revision": int(p["to_revision"])}
        case ActionKind.SCALE:
            return "k8s_scale_deployment", base | {"namespace": t.namespace, "name": t.name,
                                                    "replicas": int(p["replicas"])}
        case ActionKind.DEPLOY | ActionKind.SET_GPU_RESOURCES:
            stray = sorted(set(p) - set(DEPLOY_WRITES) - DEPLOY_RECORDS)
            if stray:
                raise ValueError(f"a deploy may change {', '.join(DEPLOY_WRITES)} (and a Deployment's max_surge); "
                                 f"not {', '.join(map(str, stray))}")
            keys = list(DEPLOY_WRITES)
            # An Argo Rollout gets its new template and runs its own canary; a Deployment gets a rolling
            # update whose maxSurge the preflight sized to the free GPUs.
            tool = "k8s_set_rollout_template" if t.kind == "Rollout" else "k8s_set_pod_template"
            if t.kind != "Rollout":
                keys.append("max_surge")
            return tool, base | {"namespace": t.namespace, "name": t.name} | {k: p[k] for k in keys if k in p}
        case ActionKind.PAUSE_ROLLOUT | ActionKind.RESUME_ROLLOUT:
            return "k8s_pause_rollout", base | {"namespace": t.namespace, "name": t.name,
                                                 "paused": spec.action == ActionKind.PAUSE_ROLLOUT}
        case ActionKind.PROMOTE_ROLLOUT | ActionKind.ABORT_ROLLOUT:
            if t.kind != "Rollout":
                raise ValueError(f"{spec.action.value} is for Argo Rollouts, not a {t.kind}")
            return "k8s_rollout_promote_abort", base | {"namespace": t.namespace, "name": t.name,
                                                         "promote": spec.action == ActionKind.PROMOTE_ROLLOUT}
        case ActionKind.CORDON_NODE:
            return "k8s_cordon_node", {"node": t.name, "dry_run": dry_run, "expected_resource_version": expected_rv}
        case ActionKind.RESTART_POD:
            if t.kind != "Pod":
                raise ValueError(f"restart_pod restarts a Pod, not a {t.kind}")
            return "k8s_restart_pod", base | {"namespace": t.namespace, "name": t.name}
        case ActionKind.DRAIN_NODE:
            return "k8s_drain_node", {"node": t.name, "dry_run": dry_run, "expected_resource_version": expected_rv,
                                      "evict_namespaces": list(evict_namespaces)}
    raise ValueError(f"{spec.action.value} is not an executable change")


def policy_request(spec: ChangeSpec, *, risk: str, obj: dict[str, Any] | None, requester: str,
                   blast: BlastRadius, at: dt.datetime, changes_last_hour: int,
                   target_changes_last_hour: int, unschedulable_gpu_nodes_after: int = 0) -> Request:
    """The policy request for `spec` against the live object `obj` (None when it could not be read)."""
    return Request(action=spec.action.value, risk=risk, cluster=spec.cluster, namespace=spec.target.namespace,
                   target_kind=spec.target.kind, target_name=spec.target.name,
                   labels=(obj or {}).get("metadata", {}).get("labels") or {}, requester=requester,
                   gpus=blast.gpus, replicas_delta=replicas_delta(spec, obj), capacity_drop=blast.capacity_drop,
                   at=at, changes_last_hour=changes_last_hour, target_changes_last_hour=target_changes_last_hour,
                   unschedulable_gpu_nodes_after=unschedulable_gpu_nodes_after,
                   ready_replicas_after=blast.ready_after)
