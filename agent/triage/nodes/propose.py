"""Propose node: typed change requests from the top hypothesis's runbook remediations.

Triage only proposes. A remediation applies when its hypothesis is the top one, confident enough,
and its `when` condition holds; its parameters are filled from evidence (e.g. the revision to roll
back to). When nothing safe applies, the proposal is "page a human". Executing any of this is the
guarded executor's job, after policy and approval.

A target must be supported by evidence the agent read itself, never by an alert label alone (anyone
who can reach the webhook writes labels): the value a runbook derives for it from evidence (the node
reporting the XID) must agree, or, where nothing derives it, a query that succeeded must have read
that very object (the Deployment's rollout history). Otherwise the proposal is to page a human, and
the reason says why.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.models import ActionKind, Category, EvidenceStatus, Hypothesis, ObjectRef, ProposedAction
from agent.triage.conditions import compile_condition, compile_value, evaluate, evaluate_value
from agent.triage.features import CULPRIT_KINDS, MIN_CONFIDENCE, NAMESPACED_KINDS, feature_map
from agent.triage.render import render
from agent.triage.runbooks import Remediation, Runbook
from agent.triage.state import PriorChange, TriageContext, TriageState
from tools.k8s_read.ownership import GitOpsOwner, gitops_owner
from tools.k8s_read.tools import K8sWorkloadResult


def _param(value: Any, feats: dict[str, Any]) -> Any:
    """A string parameter is a value expression over features; numbers and booleans are literal."""
    if isinstance(value, str):
        v = evaluate_value(compile_value(value), feats)
        return int(v) if isinstance(v, float) and v.is_integer() else v
    return value


def _target(rem: Remediation, feats: dict[str, Any]) -> ObjectRef | None:
    if not rem.target or not (name := feats.get(f"ctx.{rem.target}")):
        return None
    kind = CULPRIT_KINDS.get(rem.target, "Deployment")
    ns = feats.get("ctx.namespace") if kind in NAMESPACED_KINDS else None
    return ObjectRef(kind=kind, name=str(name), namespace=ns)


def unsupported(target: ObjectRef, key: str, books: list[Runbook], feats: dict[str, Any],
                read: set[str]) -> str | None:
    """Why the evidence does not support `target` (named by context key `key`), or None when it does.

    `read` holds the parameter values of evidence queries that succeeded (the objects the agent read).
    """
    derived = [v for b in books if key in b.derive
               if (v := evaluate_value(compile_value(b.derive[key]), feats)) not in (None, "")]
    if derived:
        if all(str(v) == target.name for v in derived):
            return None
        return (f"the alert names {target.kind} {target.name}, but the evidence points at "
                f"{', '.join(sorted({str(v) for v in derived}))}")
    if target.name in read:
        return None
    return f"no evidence the agent read concerns {target.kind} {target.name}; only an alert label names it"


def proposals_for(top: Hypothesis | None, books: list[Runbook], feats: dict[str, Any],
                  read: set[str] | None = None) -> list[ProposedAction]:
    if top is None:
        return [ProposedAction(kind=ActionKind.PAGE_HUMAN, reason="no runbook covers this alert")]
    if top.category == Category.HEALTHY:
        return [ProposedAction(kind=ActionKind.NONE, reason="no anomaly in the evidence", hypothesis_id=top.id)]
    if top.confidence < MIN_CONFIDENCE:
        return [ProposedAction(kind=ActionKind.PAGE_HUMAN, hypothesis_id=top.id,
                               reason=f"evidence is inconclusive (top hypothesis {top.confidence:.0%})")]
    # Evidence a runbook declares but that never came back (not gathered, not recorded) is evidence the
    # agent does not have: `<id>.ok` is false for it, as for a query that failed.
    feats = {**{f"{q.id}.ok": False for b in books for q in b.evidence}, **feats}
    out: list[ProposedAction] = []
    doubts: list[str] = []
    for book in books:
        for rem in book.remediations:
            if rem.hypothesis != top.id:
                continue
            if rem.when and evaluate(compile_condition(rem.when), feats).value is not True:
                continue
            params = {k: _param(v, feats) for k, v in rem.params.items()}
            if any(v is None for v in params.values()):
                continue  # a parameter the evidence could not supply: never guess it
            target = _target(rem, feats)
            if rem.target and target is None:
                continue
            if target is not None and rem.target and read is not None and (
                    why := unsupported(target, rem.target, books, feats, read)):
                doubts.append(why)
                continue
            action = ProposedAction(kind=rem.action, target=target, params=params,
                                    reason=render(rem.reason, feats), hypothesis_id=top.id)
            if action not in out:
                out.append(action)
    if not out and doubts:
        out.append(ProposedAction(kind=ActionKind.PAGE_HUMAN, hypothesis_id=top.id,
                                  reason=f"{top.title}: not proposing a change — {'; '.join(doubts)}"))
    if not out:
        out.append(ProposedAction(kind=ActionKind.PAGE_HUMAN, hypothesis_id=top.id,
                                  reason=f"{top.title}: no safe automated remediation applies"))
    return out


async def propose(state: TriageState, runtime: Runtime[TriageContext]) -> dict[str, Any]:
    books = [b for b in runtime.context.runbooks if b.id in state.get("runbook_ids", [])]
    hyps = state.get("hypotheses", [])
    feats = feature_map(state)
    # The policy's limits as `policy.*` features, so a runbook can size a step the policy allows
    # (e.g. a scale-down that removes no more than policy.max_capacity_drop of the capacity at once).
    feats.update({f"policy.{k}": v for k, v in runtime.context.limits.items()})
    proposals = proposals_for(hyps[0] if hyps else None, books, feats, objects_read(state))
    owners = {}
    for p in proposals:
        if p.kind in WRITES and p.target is not None and p.target.kind == "Deployment" and p.target.namespace:
            owners[p.target.name] = await _owner(runtime.context, p.target, state["incident"].id)
    proposals = [_not_again(p, runtime.context.prior_changes) for p in proposals]
    return {"proposals": [_through_git(p, owners.get(p.target.name)) if p.target is not None else p
                          for p in proposals]}


def _not_again(p: ProposedAction, prior: list[PriorChange]) -> ProposedAction:
    """A write to an object this incident's earlier remediation already changed becomes a page.

    The incident is being triaged again, so that change did not resolve it; changing the same object once
    more (a second rollback, undoing the first) is how an agent flip-flops. A human decides the next step.
    """
    if p.kind not in WRITES or p.target is None:
        return p
    done = [c for c in prior if (c.target.kind, c.target.namespace, c.target.name)
            == (p.target.kind, p.target.namespace, p.target.name)]
    if not done:
        return p
    t = p.target
    what = ", ".join(f"{c.action} ({c.status})" for c in done)
    return ProposedAction(
        kind=ActionKind.PAGE_HUMAN, target=t, hypothesis_id=p.hypothesis_id, params={"not_proposed": {
            "kind": p.kind.value, "params": p.params}},
        reason=(f"{t.kind} {t.namespace}/{t.name} was already changed for this incident ({what}) and the incident "
                f"is still open: not changing it again automatically. Would have proposed {p.kind.value} "
                f"{p.params or ''} because {p.reason}"))


# Proposals that write to the target; a GitOps controller would revert each of them on its next sync.
WRITES = {ActionKind.ROLLBACK, ActionKind.SCALE, ActionKind.SET_GPU_RESOURCES, ActionKind.PAUSE_ROLLOUT,
          ActionKind.RESUME_ROLLOUT, ActionKind.DEPLOY}


async def _owner(ctx: TriageContext, target: ObjectRef, incident_id: str) -> GitOpsOwner | None:
    """Read the target's own metadata (whatever the runbook gathered) and name its GitOps owner, if any."""
    out = await ctx.runner.call("k8s_get_workload", {"namespace": target.namespace, "name": target.name},
                                actor=ctx.actor, incident_id=incident_id)
    if not out.ok or not isinstance(out.result, K8sWorkloadResult):
        return None
    w = out.result.workload
    return gitops_owner(w.other_labels, w.annotations)


def _through_git(p: ProposedAction, owner: GitOpsOwner | None) -> ProposedAction:
    """A write to a GitOps-owned object becomes a manifest change for a human to apply in Git, never a write."""
    if owner is None or p.kind not in WRITES or p.target is None:
        return p
    tool = "Argo CD" if owner.tool == "argocd" else "Flux"
    t = p.target
    patch = {"owner": tool, "source": owner.source, "evidence": owner.evidence, "certain": owner.certain,
             "change": {"kind": p.kind.value, "target": f"{t.kind} {t.namespace}/{t.name}", "params": p.params}}
    return ProposedAction(
        kind=ActionKind.PAGE_HUMAN, target=t, hypothesis_id=p.hypothesis_id, params={"manifest_patch": patch},
        reason=(f"{t.kind} {t.namespace}/{t.name} is reconciled by {tool} ({owner.source}; {owner.evidence}): a "
                f"direct {p.kind.value} would be reverted on its next sync, so nothing is written to the cluster. "
                f"Make the change in the repository {tool} syncs from and let it roll out: {p.reason}"))


def objects_read(state: TriageState) -> set[str]:
    """The parameter values of evidence queries that succeeded: the objects the agent read itself."""
    return {str(v) for e in state.get("evidence", []) if e.status == EvidenceStatus.OK for v in e.params.values()}
