"""The guarded executor: the only path from a change request to a cluster mutation.

propose → policy → approvals → execute, each step audited:
- `propose` fingerprints the target, asks the API for a server-side dry run (the diff and the exact
  resulting spec), measures the blast radius, evaluates policy and stores the change.
- `approve` records an approval bound to the change's spec digest and the target's fingerprint.
- `execute` re-checks policy and approvals *now*, refuses if the target changed since approval,
  claims the change in the ledger (exactly once, whoever clicks or restarts), writes with the
  resourceVersion it checked as a precondition, and reconciles after a crash by comparing the live
  spec with the recorded intended spec.
The write client exists only inside this module's runner; triage and chat runners never hold it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from agent.audit.events import AuditEvent, AuditKind, AuditSink, inputs_hash
from agent.change.executor.blast_radius import (
    NodeWorkload,
    blast_radius,
    gpu_nodes_unschedulable_after,
    owning_deployment,
    pod_blast_radius,
)
from agent.change.executor.inverse import inverse
from agent.change.executor.outcome import ExecutionRefused, ExecutionResult
from agent.change.executor.owned import RULE, gitops_patch
from agent.change.executor.reconcile import fp_key, intended_hash, landed, pod_replaced, recent
from agent.change.executor.requests import policy_request, tool_call
from agent.change.ledger import Ledger
from agent.change.models import (
    ACTION_RISK,
    FINISHED,
    Approval,
    BlastRadius,
    ChangeRequest,
    ChangeSpec,
    ChangeStatus,
    TargetFingerprint,
    change_id,
)
from agent.guard.runner import ToolRunner
from agent.models import ActionKind
from agent.policy import approvals as approval_rules
from agent.policy.evaluate import evaluate
from agent.policy.model import Approvers, Effect, Policy, Request, parse_duration
from tools.base import Risk
from tools.k8s_write.client import K8sWriteClient
from tools.k8s_write.ops import ROLLOUTS, spec_hash
from tools.k8s_write.ops import TOOLS as WRITE_TOOLS

log = logging.getLogger(__name__)
GPU = "nvidia.com/gpu"
CRASH_POINTS = ("after-claim", "after-write", "after-applied")
CostFn = Callable[[ChangeSpec, dict[str, Any] | None], float | None]
# (spec, live target) -> its replicas that are available but failing now, read from Prometheus; None: unknown.
FailingFn = Callable[[ChangeSpec, dict[str, Any]], Awaitable[int | None]]
# Incidents of one cause arrive together (an alert storm: one group per alertname and node or model); a
# proposal of the same change on the same object within this window is linked to the first request.
LINK_WINDOW = dt.timedelta(hours=1)
# Asked already, on the same spec state: waiting, approved, running, or answered no (by policy or a person).
ASKED = (ChangeStatus.PENDING_APPROVAL, ChangeStatus.APPROVED, ChangeStatus.EXECUTING, ChangeStatus.DENIED,
         ChangeStatus.REJECTED)
# Changes that leave the GPU allocation as it is: their predicted cost change is zero, not unknown.
SAME_ALLOCATION = (ActionKind.ROLLBACK, ActionKind.PAUSE_ROLLOUT, ActionKind.RESUME_ROLLOUT,
                   ActionKind.PROMOTE_ROLLOUT, ActionKind.ABORT_ROLLOUT)


class Executor:
    def __init__(self, ledger: Ledger, policy: Policy, write: K8sWriteClient, audit: AuditSink, *,
                 cluster: str = "default", owner: str | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 crash_after: str | None = None, claim_ttl_s: float = 30.0, conflict_retries: int = 4,
                 cost_delta: CostFn | None = None, failing_replicas: FailingFn | None = None) -> None:
        if crash_after is not None and crash_after not in CRASH_POINTS:
            raise ValueError(f"crash_after must be one of {CRASH_POINTS}")
        self.ledger, self.policy, self.write, self.audit = ledger, policy, write, audit
        self.cluster = cluster
        # Host and PID: replicas in different pods may all run as PID 1.
        self.owner = owner or f"executor:{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self.crash_after = crash_after  # chaos testing: SIGKILL this process at a named point
        # A claim older than this that never finished was abandoned (its process died); younger ones
        # may still be executing elsewhere and are left alone.
        self.claim_ttl_s = claim_ttl_s
        self.conflict_retries = conflict_retries  # 409s retried after a re-read that finds the spec unchanged
        self.cost_delta = cost_delta  # (spec, live object) -> USD/month, from the price catalog
        self.failing_replicas = failing_replicas  # failing replicas are not healthy capacity (blast_radius)
        self._inflight: set[str] = set()  # change ids this process is executing now

        self.runner = ToolRunner(WRITE_TOOLS, {"k8s_write": write}, audit, max_risk=Risk.DESTRUCTIVE, timeout_s=60)

    # ---- reading the target ---------------------------------------------------------------------
    async def _read(self, spec: ChangeSpec) -> dict[str, Any]:
        t = spec.target
        if t.kind == "Node":
            resp = await asyncio.to_thread(self.write.core.read_node, t.name, _preload_content=False)
        elif t.kind == "Deployment":
            resp = await asyncio.to_thread(self.write.apps.read_namespaced_deployment, t.name, t.namespace,
                                           _preload_content=False)
        elif t.kind == "Pod":
            resp = await asyncio.to_thread(self.write.core.read_namespaced_pod, t.name, t.namespace,
                                           _preload_content=False)
        elif t.kind == "Rollout":
            group, version, plural = ROLLOUTS
            resp = await asyncio.to_thread(self.write.custom.get_namespaced_custom_object, group, version,
                                           t.namespace, plural, t.name, _preload_content=False)
        else:
            raise ValueError(f"cannot change a {t.kind}")
        return dict(json.loads(resp.data))

    async def _failing(self, spec: ChangeSpec, obj: dict[str, Any] | None) -> int:
        """The target's replicas that serve mostly errors now (0 when unknown or unreadable: all healthy)."""
        if obj is None or self.failing_replicas is None or spec.target.kind == "Node":
            return 0
        try:
            return await self.failing_replicas(spec, obj) or 0
        except Exception as e:  # unknown health is full health: the capacity rule stays at its strictest
            log.warning("cannot read which replicas of %s are failing: %s", spec.target, e)
            return 0

    async def _blast(self, spec: ChangeSpec, obj: dict[str, Any] | None,
                     work: NodeWorkload | None = None) -> BlastRadius:
        if spec.target.kind == "Pod" and obj is not None:
            return pod_blast_radius(obj, await self._pod_owner(obj), failing=await self._failing(spec, obj) > 0)
        return blast_radius(spec, obj, work, failing=await self._failing(spec, obj))

    async def _pod_owner(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        """The Deployment whose ReplicaSet owns `pod`, or None (no such owner, or it cannot be read)."""
        key = owning_deployment(pod)
        if key is None:
            return None
        ns, name = key.split("/", 1)
        try:
            resp = await asyncio.to_thread(self.write.apps.read_namespaced_deployment, name, ns,
                                           _preload_content=False)
        except Exception as e:  # unknown owner: the blast radius counts the pod as all of the model
            log.warning("cannot read deployment %s owning pod %s: %s", key, pod["metadata"].get("name"), e)
            return None
        return dict(json.loads(resp.data))

    async def _list(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        resp = await asyncio.to_thread(fn, *args, _preload_content=False, **kwargs)
        return list(json.loads(resp.data)["items"])

    async def _node_workload(self, spec: ChangeSpec) -> NodeWorkload | None:
        """The pods on a target node and the Deployments that own them (None for other targets)."""
        if spec.target.kind != "Node":
            return None
        pods = await self._list(self.write.core.list_pod_for_all_namespaces,
                                field_selector=f"spec.nodeName={spec.target.name}")
        deployments: dict[str, dict[str, Any]] = {}
        evict = self._evict_namespaces
        # Only Deployments a drain may touch are read (the executor may read no others).
        for key in sorted({k for p in pods if p["metadata"].get("namespace") in evict
                           and (k := owning_deployment(p)) is not None}):
            ns, name = key.split("/", 1)
            try:
                resp = await asyncio.to_thread(self.write.apps.read_namespaced_deployment, name, ns,
                                               _preload_content=False)
            except Exception as e:  # gone since the pod was listed: its pods count for no model
                log.warning("cannot read deployment %s owning pods on %s: %s", key, spec.target.name, e)
                continue
            deployments[key] = dict(json.loads(resp.data))
        return NodeWorkload(pods=pods, deployments=deployments, evict_namespaces=evict)

    @property
    def _evict_namespaces(self) -> tuple[str, ...]:
        return tuple(self.policy.limits.drain_namespaces)

    async def _unschedulable_after(self, spec: ChangeSpec) -> int:
        if spec.target.kind != "Node":
            return 0
        return gpu_nodes_unschedulable_after(await self._list(self.write.core.list_node), spec.target.name)

    @staticmethod
    def fingerprint_of(obj: dict[str, Any]) -> TargetFingerprint:
        meta = obj["metadata"]
        return TargetFingerprint(kind=obj.get("kind", ""), name=meta["name"], namespace=meta.get("namespace"),
                                 uid=meta.get("uid", ""), generation=int(meta.get("generation") or 0),
                                 spec_hash=spec_hash(obj),
                                 revision=(meta.get("annotations") or {}).get("deployment.kubernetes.io/revision"))

    def _audit(self, kind: AuditKind, actor: str, action: str, decision: str, reason: str,
               change: ChangeRequest | None, result: dict[str, Any] | None = None) -> None:
        self.audit.append(AuditEvent(at=self.clock(), kind=kind, actor=actor, action=action,
                                     incident_id=change.incident_id if change else None,
                                     inputs_hash=change.spec_digest if change else inputs_hash(action),
                                     decision=decision, reason=reason, result=result or {}))

    # ---- propose --------------------------------------------------------------------------------
    async def propose(self, spec: ChangeSpec, *, reason: str, requester: str, incident_id: str | None = None,
                      evidence: list[str] | None = None, rollback_of: str | None = None) -> ChangeRequest:
        now = self.clock()
        risk = ACTION_RISK.get(spec.action, Risk.DESTRUCTIVE).label
        obj: dict[str, Any] | None = None
        diff, error = "", ""
        try:
            obj = await self._read(spec)
        except Exception as e:  # the target may not exist or may be unreadable: policy still decides
            error = f"cannot read {spec.target}: {e}"
        fp = self.fingerprint_of(obj) if obj else TargetFingerprint(kind=spec.target.kind, name=spec.target.name,
                                                                    namespace=spec.target.namespace, spec_hash="")
        work: NodeWorkload | None = None
        unschedulable = 0
        if obj is not None:
            try:
                work = await self._node_workload(spec)
                unschedulable = await self._unschedulable_after(spec)
            except Exception as e:  # a node change whose pods cannot be read is not proposed blind
                error = f"cannot read the workload on {spec.target}: {e}"
        blast = await self._blast(spec, obj, work)
        req = self._request(spec, risk=risk, obj=obj, requester=requester, blast=blast, at=now,
                            unschedulable_after=unschedulable)
        decision = evaluate(self.policy, req)
        owned = gitops_patch(spec, obj)
        if decision.effect != Effect.DENY and obj is not None and owned is None:
            try:
                name, params = tool_call(spec, dry_run=True, expected_rv=None, evict_namespaces=self._evict_namespaces)
                out = await self.runner.call(name, params, actor=f"executor:dry-run:{requester}",
                                             incident_id=incident_id)
                diff = str(getattr(out.result, "diff", "")) if out.ok else ""
                if not out.ok:
                    error = out.error or "dry run failed"
            except (KeyError, ValueError) as e:
                error = f"invalid change parameters: {e}"
        status = {Effect.DENY: ChangeStatus.DENIED, Effect.REQUIRE_APPROVAL: ChangeStatus.PENDING_APPROVAL,
                  Effect.ALLOW: ChangeStatus.APPROVED}[decision.effect]
        if error and status != ChangeStatus.DENIED:
            status = ChangeStatus.FAILED
        rule, why = decision.rule, decision.reason if not error else f"{decision.reason} ({error})"
        if owned is not None:  # a direct write would be reverted: the request carries the Git patch instead
            status, diff, rule, why = ChangeStatus.DENIED, owned.diff, RULE, owned.explanation
        if incident_id is not None and obj is not None and owned is None and not error and \
                (other := self._same_change_elsewhere(spec, fp, incident_id, noop=not diff.strip(), now=now)):
            # An alert storm: several incidents (one per alert group) of one cause propose the same change.
            # The one request stands for all of them; approvers are asked once and it runs once.
            self._audit(AuditKind.POLICY_DECISION, requester, f"propose {spec.action.value} {spec.target}", "linked",
                        f"the same change is {other.id} ({other.status.value}), proposed for incident "
                        f"{other.incident_id}; incident {incident_id} is linked to it", other,
                        {"change_id": other.id, "linked_incident": incident_id})
            return other
        attempt = 0
        while (prior := self.ledger.get(change_id(spec, fp, incident_id, attempt))) is not None \
                and prior.status in FINISHED:
            attempt += 1
        ch = ChangeRequest(
            id=change_id(spec, fp, incident_id, attempt), spec=spec, spec_digest=spec.digest(), fingerprint=fp,
            risk=risk, blast_radius=blast, diff=diff, reason=reason, incident_id=incident_id, evidence=evidence or [],
            requester=requester, created_at=now, status=status, policy_rule=rule, policy_reason=why,
            approvals_required=decision.approvers.count if decision.approvers else 0,
            approver_roles=decision.approvers.roles if decision.approvers else [],
            allow_self_approval=decision.approvers.allow_self_approval if decision.approvers else False,
            approval_ttl_s=int(parse_duration(decision.approvers.ttl).total_seconds()) if decision.approvers else 900,
            rollback_of=rollback_of, cost_delta_per_month=self._cost(spec, obj),
        )
        if not self.ledger.save(ch):
            existing = self.ledger.get(ch.id)
            assert existing is not None
            return existing
        self._audit(AuditKind.POLICY_DECISION, requester, f"propose {spec.action.value} {spec.target}",
                    "deny" if owned is not None else decision.effect.value, f"{rule}: {ch.policy_reason}", ch,
                    {"change_id": ch.id, "status": ch.status.value})
        return ch

    def _same_change_elsewhere(self, spec: ChangeSpec, fp: TargetFingerprint, incident_id: str, *, noop: bool,
                               now: dt.datetime) -> ChangeRequest | None:
        """A request for the same change (spec digest) on the same object (uid), made for another incident within
        LINK_WINDOW: asked on the same spec state (waiting, running, or answered no), or already carried out (this
        one's dry run changes nothing). None when there is none: then this incident gets a request of its own."""
        digest = spec.digest()
        for other in self.ledger.list_changes(limit=200):
            if other.created_at < now - LINK_WINDOW:
                break  # newest first
            if other.spec_digest != digest or other.fingerprint.uid != fp.uid or other.incident_id == incident_id:
                continue
            if other.status in ASKED and other.fingerprint.spec_hash == fp.spec_hash:
                return other
            if other.status in (ChangeStatus.APPLIED, ChangeStatus.VERIFIED) and noop:
                return other
        return None

    def _request(self, spec: ChangeSpec, *, risk: str, obj: dict[str, Any] | None, requester: str,
                 blast: BlastRadius, at: dt.datetime, unschedulable_after: int = 0) -> Request:
        hour_ago = at - dt.timedelta(hours=1)
        return policy_request(spec, risk=risk, obj=obj, requester=requester, blast=blast, at=at,
                              changes_last_hour=self.ledger.changes_since(hour_ago),
                              target_changes_last_hour=self.ledger.changes_since(hour_ago, str(spec.target)),
                              unschedulable_gpu_nodes_after=unschedulable_after)

    def _cost(self, spec: ChangeSpec, obj: dict[str, Any] | None) -> float | None:
        if obj is not None and spec.action in SAME_ALLOCATION:
            return 0.0
        if self.cost_delta is None:
            return None
        try:
            return self.cost_delta(spec, obj)
        except Exception:  # pricing is advice: a catalog problem never blocks a proposal
            log.exception("pricing %s failed", spec.action.value)
            return None

    # ---- approve --------------------------------------------------------------------------------
    def approve(self, change_id_: str, identity: str, *, decision: str = "approve", via: str = "cli") -> ChangeRequest:
        """Record `identity`'s decision on a change. The identity ('kubernetes:alice', 'slack:U024BE7LH', or a
        person's name where the caller established it) is resolved to a person of the policy; the approval
        is recorded under the person, so one person counts once whatever channel they use."""
        ch = self.ledger.get(change_id_)
        if ch is None:
            raise ExecutionRefused(f"no change {change_id_}")
        person = approval_rules.person_of(self.policy, identity)
        actor = f"user:{person}" if person else identity
        if person is None:
            self._audit(AuditKind.APPROVAL, actor, f"{decision} {ch.id}", "refused",
                        f"unknown identity {identity} (via {via}): nobody in the policy's people table", ch)
            raise ExecutionRefused(f"{identity} is not anyone in the policy's people table, so it may not decide "
                                   f"on {ch.id}; an admin adds it to a person under `people:` in the policy")
        if ch.status not in (ChangeStatus.PENDING_APPROVAL, ChangeStatus.APPROVED) or ch.approvals_required == 0:
            self._audit(AuditKind.APPROVAL, actor, f"{decision} {ch.id}", "refused", f"change is {ch.status.value}", ch)
            raise ExecutionRefused(f"{ch.id} is {ch.status.value}; it takes no approvals")
        roles = [r for r in approval_rules.roles_of(self.policy, person) if r in ch.approver_roles]
        if not roles:
            self._audit(AuditKind.APPROVAL, actor, f"{decision} {ch.id}", "refused",
                        f"{person} holds none of the roles {ch.approver_roles}", ch)
            raise ExecutionRefused(f"{person} may not approve {ch.id}: it needs one of the roles {ch.approver_roles}")
        if approval_rules.is_forbidden_self_approval(self.policy, self._approvers(ch), requester=ch.requester,
                                                     approver=person):
            self._audit(AuditKind.APPROVAL, actor, f"{decision} {ch.id}", "refused", "self-approval", ch)
            raise ExecutionRefused(f"{person} requested {ch.id} and may not approve it")
        now = self.clock()
        a = Approval(change_id=ch.id, approver=person, identity=identity, role=roles[0], decision=decision, at=now,
                     spec_digest=ch.spec_digest, fingerprint=ch.fingerprint,
                     expires_at=now + dt.timedelta(seconds=ch.approval_ttl_s), via=via)
        recorded = self.ledger.add_approval(a)
        self._audit(AuditKind.APPROVAL, actor, f"{decision} {ch.id}", decision if recorded else "duplicate",
                    f"as {roles[0]} via {via} ({identity})", ch,
                    {"approvers": [x.approver for x in self.ledger.approvals(ch.id)]})
        if decision == "reject":
            ch = ch.model_copy(update={"status": ChangeStatus.REJECTED})
            self.ledger.update(ch)
            return ch
        check = self._check_approvals(ch, ch.fingerprint, now)
        if check.satisfied and ch.status == ChangeStatus.PENDING_APPROVAL:
            ch = ch.model_copy(update={"status": ChangeStatus.APPROVED})
            self.ledger.update(ch)
        return ch

    @staticmethod
    def _approvers(ch: ChangeRequest) -> Approvers:
        """The approval rule the change was proposed under, as recorded on it."""
        return Approvers(roles=ch.approver_roles or ["-"], count=max(1, ch.approvals_required),
                         allow_self_approval=ch.allow_self_approval)

    def _check_approvals(self, ch: ChangeRequest, fp_now: TargetFingerprint,
                         now: dt.datetime) -> approval_rules.ApprovalCheck:
        need = self._approvers(ch)
        views = [approval_rules.ApprovalView(approver=a.approver, role=a.role, decision=a.decision,
                                             spec_digest=a.spec_digest, fingerprint=fp_key(a.fingerprint),
                                             expires_at=a.expires_at) for a in self.ledger.approvals(ch.id)]
        return approval_rules.check(self.policy, need, requester=ch.requester, spec_digest=ch.spec_digest,
                                    fingerprint_now=fp_key(fp_now), approvals=views, now=now)

    # ---- execute --------------------------------------------------------------------------------
    async def execute(self, change_id_: str, actor: str = "executor") -> ExecutionResult:
        ch = self.ledger.get(change_id_)
        if ch is None:
            raise ExecutionRefused(f"no change {change_id_}")
        done = (ChangeStatus.APPLIED, ChangeStatus.VERIFIED, ChangeStatus.ROLLED_BACK)
        if ch.status in done:
            return ExecutionResult(ch.id, ch.status, False, ch.result)
        if ch.id in self._inflight:
            # The same process is executing it right now (a double click, a second resume): the ledger's
            # owner is ours, so the claim alone cannot tell this call to stay away.
            return ExecutionResult(ch.id, ChangeStatus.EXECUTING, False, {"owner": f"{self.owner} (in flight)"})
        self._inflight.add(ch.id)
        try:
            return await self._execute(ch, actor)
        finally:
            self._inflight.discard(ch.id)

    async def _execute(self, ch: ChangeRequest, actor: str) -> ExecutionResult:
        ex = self.ledger.execution(ch.id)
        if ex is not None:
            return await self._reconcile(ch, actor)

        def refuse(why: str) -> ExecutionRefused:
            self._audit(AuditKind.EXECUTION, actor, f"execute {ch.id}", "refused", why, ch)
            return ExecutionRefused(f"{ch.id} refused: {why}")

        if ch.status not in (ChangeStatus.APPROVED, ChangeStatus.PENDING_APPROVAL):
            raise refuse(f"change is {ch.status.value}")
        if ch.spec.digest() != ch.spec_digest:  # approvals bind to the digest: it must be this spec's
            raise refuse("the stored spec does not match the digest its approvals bind to")
        now = self.clock()
        try:
            obj = await self._read(ch.spec)
        except ApiException as e:
            if e.status == 404 and ch.spec.target.kind == "Pod":
                raise refuse("the pod no longer exists (already deleted or replaced): nothing to restart") from e
            raise
        fp_now = self.fingerprint_of(obj)
        if not fp_now.same_as(ch.fingerprint):
            raise refuse(f"the target's spec changed since the change was proposed (generation "
                         f"{ch.fingerprint.generation} → {fp_now.generation}); propose and approve it again")
        if (owned := gitops_patch(ch.spec, obj)) is not None:
            raise refuse(owned.explanation)
        # The fleet count is taken now: another node cordoned since the proposal counts against the limit. So
        # is a pod restart's: a replica of the same model lost since the proposal may make this one the last.
        blast = await self._blast(ch.spec, obj) if ch.spec.target.kind == "Pod" else ch.blast_radius
        req = self._request(ch.spec, risk=ch.risk, obj=obj, requester=ch.requester, blast=blast, at=now,
                            unschedulable_after=await self._unschedulable_after(ch.spec))
        decision = evaluate(self.policy, req)
        self._audit(AuditKind.POLICY_DECISION, actor, f"execute {ch.id}", decision.effect.value,
                    f"{decision.rule}: {decision.reason}", ch)
        if decision.effect == Effect.DENY:
            raise refuse(f"policy {decision.rule}: {decision.reason}")
        if decision.effect == Effect.REQUIRE_APPROVAL and (weaker := _weaker_than(ch, decision.approvers)):
            raise refuse(weaker)
        if decision.effect == Effect.REQUIRE_APPROVAL and not self._inherits_approval(ch):
            check = self._check_approvals(ch, fp_now, now)
            if not check.satisfied:
                why = check.blocked_by or (f"needs {check.missing} more approval(s) from {ch.approver_roles}"
                                           + (f" ({'; '.join(check.refused)})" if check.refused else ""))
                raise refuse(why)
        won, _ = self.ledger.claim(ch.id, self.owner, fp_now.spec_hash)
        if not won:
            return await self._reconcile(ch, actor)
        self._maybe_crash("after-claim")
        return await self._apply(ch, obj, actor)

    def _inherits_approval(self, ch: ChangeRequest) -> bool:
        """The approval of a change includes undoing it: the exact inverse of an applied change on the same
        target (a rollback to the revision before it, or a scale back to the replicas before it) needs no
        new approval. Policy must still allow it."""
        if ch.rollback_of is None:
            return False
        original = self.ledger.get(ch.rollback_of)
        ex = self.ledger.execution(ch.rollback_of)
        if original is None or ex is None or ex.state != "applied" or original.spec.target != ch.spec.target:
            return False
        undo = inverse(original)
        return undo is not None and undo.action == ch.spec.action and undo.params == ch.spec.params

    async def auto_rollback(self, original: ChangeRequest, why: str) -> ExecutionResult | None:
        """Undo an applied change whose verification failed, under the original's approval."""
        spec = inverse(original)
        if spec is None:
            self._audit(AuditKind.EXECUTION, "executor:auto-rollback", f"rollback {original.id}", "refused",
                        "no known state to return to (not a Deployment template or replica change)", original)
            return None
        rb = await self.propose(spec, reason=f"automatic rollback of {original.id}: {why}",
                                requester="executor:auto-rollback", incident_id=original.incident_id,
                                rollback_of=original.id)
        result = await self.execute(rb.id, actor="executor:auto-rollback")
        if result.status == ChangeStatus.APPLIED:
            current = self.ledger.get(original.id)
            if current is not None:
                self.ledger.update(current.model_copy(update={"status": ChangeStatus.ROLLED_BACK}))
        return result

    def record_verification(self, ch: ChangeRequest, outcome: str, summary: str) -> ChangeRequest:
        status = {"pass": ChangeStatus.VERIFIED}.get(outcome, ch.status)
        updated = ch.model_copy(update={"status": status, "result": {**ch.result, "verification": summary}})
        self.ledger.update(updated)
        self._audit(AuditKind.VERIFICATION, "executor:verify", f"verify {ch.id}", outcome, summary[:500], ch)
        return updated

    async def _apply(self, ch: ChangeRequest, obj: dict[str, Any], actor: str) -> ExecutionResult:
        ch = ch.model_copy(update={"status": ChangeStatus.EXECUTING})
        self.ledger.update(ch)
        for attempt in range(1, self.conflict_retries + 2):
            rv = obj["metadata"]["resourceVersion"]
            name, params = tool_call(ch.spec, dry_run=True, expected_rv=rv, evict_namespaces=self._evict_namespaces)
            dry = await self.runner.call(name, params, actor=actor, incident_id=ch.incident_id)
            if dry.ok and dry.result is not None:
                # The server's own answer for what the object will look like: kept so a restart can tell
                # whether the write landed.
                self.ledger.set_intended(ch.id, intended_hash(dry.result))
                name, params = tool_call(ch.spec, dry_run=False, expected_rv=rv,
                                         evict_namespaces=self._evict_namespaces)
                out = await self.runner.call(name, params, actor=actor, incident_id=ch.incident_id)
            else:
                out = dry
            if out.ok or not out.retryable or attempt > self.conflict_retries:
                break
            # 409: someone wrote the object between our read and our write (a controller's status
            # update, another client). Re-read and re-check that the spec we were approved against is
            # still the one there; only then retry with the new resourceVersion.
            obj = await self._read(ch.spec)
            fp_now = self.fingerprint_of(obj)
            same = fp_now.same_as(ch.fingerprint)
            self._audit(AuditKind.EXECUTION, actor, f"execute {ch.id}", "conflict",
                        f"attempt {attempt}: {out.error}; re-read at resourceVersion "
                        f"{obj['metadata']['resourceVersion']}: "
                        + ("spec unchanged, retrying" if same else "the target's spec changed, not retrying"), ch)
            if not same:
                self.ledger.finish(ch.id, "failed", "the target changed during execution")
                ch = ch.model_copy(update={"status": ChangeStatus.FAILED,
                                           "result": {"error": "the target's spec changed between approval and "
                                                               "write (409 on write, re-read differs)"}})
                self.ledger.update(ch)
                return ExecutionResult(ch.id, ch.status, False, ch.result)
            await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
        if not out.ok or out.result is None:
            self.ledger.finish(ch.id, "failed", out.error or "")
            ch = ch.model_copy(update={"status": ChangeStatus.FAILED, "result": {"error": out.error}})
            self.ledger.update(ch)
            self._audit(AuditKind.EXECUTION, actor, f"execute {ch.id}", "error", out.error or "", ch)
            return ExecutionResult(ch.id, ch.status, False, ch.result)
        self._maybe_crash("after-write")
        result = out.result.model_dump(mode="json")
        result.pop("diff", None)
        self.ledger.finish(ch.id, "applied", json.dumps(result))
        ch = ch.model_copy(update={"status": ChangeStatus.APPLIED, "result": result})
        self.ledger.update(ch)
        self._audit(AuditKind.EXECUTION, actor, f"execute {ch.id}", "applied", f"{name} done", ch, result)
        self._maybe_crash("after-applied")
        return ExecutionResult(ch.id, ch.status, True, result)

    async def _reconcile(self, ch: ChangeRequest, actor: str) -> ExecutionResult:
        """Someone claimed this change before (another click, replica, or this process before a crash)."""
        ex = self.ledger.execution(ch.id)
        assert ex is not None
        if ex.state == "applied":
            if ch.status in (ChangeStatus.EXECUTING, ChangeStatus.APPROVED, ChangeStatus.PENDING_APPROVAL):
                ch = ch.model_copy(update={"status": ChangeStatus.APPLIED, "result": json.loads(ex.detail or "{}")})
                self.ledger.update(ch)
            return ExecutionResult(ch.id, ch.status, False, ch.result)
        if ex.state == "failed":
            return ExecutionResult(ch.id, ChangeStatus.FAILED, False, {"error": ex.detail})
        if ch.spec.target.kind == "Pod":
            return await self._reconcile_pod(ch, ex.owner, ex.claimed_at, actor)
        obj = await self._read(ch.spec)
        live = spec_hash(obj)
        if landed(ch.spec, obj, ex.intended_spec_hash):
            detail = {"reconciled": True, "generation": obj["metadata"].get("generation")}
            self.ledger.finish(ch.id, "applied", json.dumps(detail))
            ch = ch.model_copy(update={"status": ChangeStatus.APPLIED, "result": detail})
            self.ledger.update(ch)
            self._audit(AuditKind.EXECUTION, actor, f"reconcile {ch.id}", "applied",
                        "the write had landed before the previous executor stopped", ch, detail)
            return ExecutionResult(ch.id, ch.status, False, detail)
        if live == ex.original_spec_hash:
            if ex.owner != self.owner and recent(ex.claimed_at, seconds=self.claim_ttl_s):
                return ExecutionResult(ch.id, ChangeStatus.EXECUTING, False, {"owner": ex.owner})
            self._audit(AuditKind.EXECUTION, actor, f"reconcile {ch.id}", "resumed",
                        "claimed but never written; applying now", ch)
            return await self._apply(ch, obj, actor)
        self.ledger.finish(ch.id, "failed", "the target changed under a claimed execution")
        ch = ch.model_copy(update={"status": ChangeStatus.FAILED,
                                   "result": {"error": "the target changed under a claimed execution"}})
        self.ledger.update(ch)
        self._audit(AuditKind.EXECUTION, actor, f"reconcile {ch.id}", "refused",
                    "the target changed under a claimed execution; not applying", ch)
        return ExecutionResult(ch.id, ch.status, False, ch.result)

    async def _reconcile_pod(self, ch: ChangeRequest, owner: str, claimed_at: str, actor: str) -> ExecutionResult:
        """A claimed pod restart: the pod with the proposal's uid is gone or terminating (the delete landed), or
        it is still there (never written: delete it now, unless a fresh claim elsewhere is still at it)."""
        try:
            obj: dict[str, Any] | None = await self._read(ch.spec)
        except ApiException as e:
            if e.status != 404:
                raise
            obj = None
        if pod_replaced(obj, ch.fingerprint.uid):
            detail = {"reconciled": True, "uid": ch.fingerprint.uid}
            self.ledger.finish(ch.id, "applied", json.dumps(detail))
            ch = ch.model_copy(update={"status": ChangeStatus.APPLIED, "result": detail})
            self.ledger.update(ch)
            self._audit(AuditKind.EXECUTION, actor, f"reconcile {ch.id}", "applied",
                        "the pod had been deleted before the previous executor stopped", ch, detail)
            return ExecutionResult(ch.id, ch.status, False, detail)
        assert obj is not None
        if owner != self.owner and recent(claimed_at, seconds=self.claim_ttl_s):
            return ExecutionResult(ch.id, ChangeStatus.EXECUTING, False, {"owner": owner})
        self._audit(AuditKind.EXECUTION, actor, f"reconcile {ch.id}", "resumed",
                    "claimed but never written; applying now", ch)
        return await self._apply(ch, obj, actor)

    def _maybe_crash(self, point: str) -> None:
        if self.crash_after == point:
            log.warning("chaos: SIGKILL at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)


def _weaker_than(ch: ChangeRequest, need: Approvers | None) -> str | None:
    """Why the approval rule recorded on the change is weaker than the one policy gives now, or None.

    The approvals are counted against the rule recorded on the change; a row whose rule was loosened after
    policy decided (fewer approvers, other roles, self-approval) must not let fewer people through.
    """
    if need is None:
        return None
    if ch.approvals_required < need.count:
        return f"policy now asks for {need.count} approval(s); the change records {ch.approvals_required}"
    if extra := sorted(set(ch.approver_roles) - set(need.roles)):
        return f"the change accepts approvals from roles policy does not name now: {extra}"
    if ch.allow_self_approval and not need.allow_self_approval:
        return "the change allows self-approval; policy does not"
    return None
