"""`opsagent changes list|show|approve|reject`: the human side of change requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agent.change.executor.outcome import ExecutionRefused
from agent.change.flow import FlowEvent
from agent.change.models import ChangeRequest, ChangeStatus
from agent.entry.commands.common import (
    DEFAULT_SANDBOX_DIR,
    ConfigOpt,
    JsonOpt,
    SandboxDirOpt,
    SandboxOpt,
    StateOpt,
    fail,
    open_app,
    progress,
    run_in_app,
)
from agent.entry.commands.identity import KubeconfigOpt, cli_identity

changes_app = typer.Typer(help="Change requests proposed by the agent: review, approve, reject.", no_args_is_help=True)

AsOpt = Annotated[
    str | None, typer.Option("--as", help="env: dev only: decide as this person of the policy's `people:` "
                             "(never trusted elsewhere: there your identity is what the cluster says).")
]


def _line(ch: ChangeRequest) -> str:
    return (
        f"{ch.id}  {ch.status.value:<16} {ch.spec.action.value:<10} {ch.spec.target!s:<40} "
        f"{ch.policy_rule} ({len(ch.approver_roles) and ch.approvals_required} approval(s))"
    )


@changes_app.command("list")
def list_changes(
    status: Annotated[str | None, typer.Option(help="Only this status, e.g. pending_approval.")] = None,
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List change requests, newest first."""
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    try:
        items = app.ledger.list_changes(ChangeStatus(status) if status else None)
    except ValueError:
        fail(f"unknown status {status!r}; one of {[s.value for s in ChangeStatus]}", 2)
    finally:
        app.close()
    if as_json:
        typer.echo(json.dumps([c.model_dump(mode="json") for c in items], indent=2))
        return
    for c in items:
        typer.echo(_line(c))
    if not items:
        typer.echo("no change requests")


@changes_app.command("show")
def show(
    change_id: str,
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one change request: what, why, diff, risk, blast radius, policy and approvals."""
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    try:
        ch = app.ledger.get(change_id)
        approvals = app.ledger.approvals(change_id)
    finally:
        app.close()
    if ch is None:
        fail(f"no change request {change_id}", 2)
    if as_json:
        typer.echo(
            json.dumps(
                {"change": ch.model_dump(mode="json"), "approvals": [a.model_dump(mode="json") for a in approvals]},
                indent=2,
            )
        )
        return
    b = ch.blast_radius
    typer.echo(
        f"{ch.id}: {ch.spec.action.value} {ch.spec.target} {ch.spec.params}\n"
        f"status: {ch.status.value}   risk: {ch.risk}   requested by {ch.requester}\n"
        f"why: {ch.reason}\n"
        f"blast radius: {b.gpus} GPUs, {b.replicas} replicas, up to {b.capacity_drop:.0%} of capacity"
        f"{' (' + ', '.join(b.models) + ')' if b.models else ''}\n"
        f"predicted cost change: {_cost(ch.cost_delta_per_month)}\n"
        f"policy: {ch.policy_rule} — {ch.policy_reason}\n"
        f"approvals: {len([a for a in approvals if a.decision == 'approve'])}/{ch.approvals_required} from "
        f"{', '.join(ch.approver_roles) or '-'}; each valid {ch.approval_ttl_s // 60} min\n"
    )
    for model, drop in b.per_model.items():
        typer.echo(f"  {model}: loses {drop:.0%} of its serving replicas")
    for model, share in b.at_risk.items():
        typer.echo(f"  {model}: keeps serving {share:.0%} of its replicas on the node (a drain would remove them)")
    for left in b.left_in_place:
        typer.echo(f"  left on the node: {left}")
    for a in approvals:
        typer.echo(f"  {a.decision} by {a.approver} ({a.role}) at {a.at:%H:%M:%S} UTC via {a.via}"
                   + (f" as {a.identity}" if a.identity not in ("", a.approver) else ""))
    typer.echo("\n" + (ch.diff or "(no diff)"))


def _cost(usd: float | None) -> str:
    return "unknown (no price for this change)" if usd is None else f"{usd:+,.0f} USD/month"


def _decide(
    change_id: str,
    decision: str,
    who: str | None,
    kubeconfig: Path | None,
    config: ConfigOpt,
    use_sandbox: bool,
    sandbox_dir: SandboxDirOpt,
    state_dir: StateOpt,
) -> None:
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    try:
        approver = cli_identity(app, who, kubeconfig, f"{decision} {change_id}")
    except ValueError as e:
        app.close()
        fail(str(e), 4)

    async def show(ev: FlowEvent) -> None:
        progress(f"{ev.stage}: {ev.message}")

    try:
        st = run_in_app(app, app.flow(on_event=show).decide(change_id, approver, decision, via="cli"))
    except ExecutionRefused as e:
        fail(str(e), 4)
    except ValueError as e:
        fail(str(e), 2)
    finally:
        app.close()
    typer.echo(f"{decision}d {st.change.id} as {approver}: {st.stage}"
               + (f" — {st.verification}" if st.verification else (f" — {st.detail}" if st.detail else "")))
    if st.stage in ("refused", "failed", "regression", "rolled_back"):
        raise typer.Exit(5)
    if st.stage in ("inconclusive", "unverified"):
        raise typer.Exit(6)  # applied, but not shown to be healthy: never reported as success


@changes_app.command("approve")
def approve(
    change_id: str,
    who: AsOpt = None,
    kubeconfig: KubeconfigOpt = None,
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Approve a change request (bound to its exact spec and the target's state when proposed).

    When this approval completes the ones policy requires, the change's flow resumes here: the guarded
    executor applies it, then it is verified (and rolled back automatically if it regresses).
    """
    _decide(change_id, "approve", who, kubeconfig, config, use_sandbox, sandbox_dir, state_dir)


@changes_app.command("reject")
def reject(
    change_id: str,
    who: AsOpt = None,
    kubeconfig: KubeconfigOpt = None,
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Reject a change request; it will not run."""
    _decide(change_id, "reject", who, kubeconfig, config, use_sandbox, sandbox_dir, state_dir)
