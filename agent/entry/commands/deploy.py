"""`opsagent deploy NAMESPACE/NAME --version V | --image IMG`: ask for a deployment, get a change request.

The preflight runs first (GPU memory fit, free GPUs for the surge or canary step, cost, staging soak);
a failed one is refused here with its numbers and nothing is proposed. A passing one goes through
`ChangeFlow.propose()` like every change: dry-run diff, policy, approvals, audit.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from agent.change.deploy import (
    DeployOutcome,
    DeployRefused,
    DeployRequest,
    TargetNotFound,
    parse_target,
)
from agent.change.flow import FlowEvent
from agent.change.models import ChangeSpec, ChangeStatus
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
from agent.models import ActionKind, ObjectRef
from tools.base import ToolError


def outcome_json(out: DeployOutcome) -> dict[str, Any]:
    """What the CLI's --json and the CI API answer: the change (or the refusal) and the preflight."""
    checks = [{"name": c.name, "ok": c.ok, "summary": c.summary, "details": list(c.details)}
              for c in out.plan.preflight.checks]
    body: dict[str, Any] = {"target": out.plan.request.target, "kind": out.plan.kind, "summary": out.plan.summary,
                            "preflight": checks}
    if out.state is None:
        return body | {"status": "refused", "reasons": out.plan.preflight.reasons()}
    ch = out.state.change
    return body | {"change_id": ch.id, "status": ch.status.value, "stage": str(out.state.stage),
                   "policy": f"{ch.policy_rule}: {ch.policy_reason}", "approvals_required": ch.approvals_required,
                   "diff": ch.diff}


def deploy(
    target: Annotated[str, typer.Argument(help="NAMESPACE/NAME of an Argo Rollout or a Deployment.")],
    version: Annotated[str | None, typer.Option(help="Model version to deploy (the pods' model-version label).")]
        = None,
    image: Annotated[str | None, typer.Option(help="Container image to deploy.")] = None,
    args: Annotated[str | None, typer.Option("--args", help="The serving container's new args, one quoted string "
                                             "(e.g. \"--max-model-len 16384 --tensor-parallel-size 1\").")] = None,
    strategy: Annotated[str | None, typer.Option(help="canary (Argo Rollouts) or rolling (Deployments); default: "
                                                  "the one the target supports.")] = None,
    model: Annotated[str | None, typer.Option(help="Serve a different model (default: the same).")] = None,
    container: Annotated[str | None, typer.Option(help="Container to change (default: the first).")] = None,
    node_selector: Annotated[list[str] | None, typer.Option("--node-selector", help="KEY=VALUE; repeat. A move to "
                                                            "another GPU class.")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs per replica after the change.")] = None,
    mig_profile: Annotated[str | None, typer.Option(
        "--mig-profile", help="One MIG slice of this profile per replica instead of whole GPUs (e.g. 3g.20gb): "
        "nvidia.com/mig-<profile>: 1, tensor-parallel size 1.")] = None,
    promote_from: Annotated[str | None, typer.Option(help="Staging namespace where this version must have served "
                                                      "within SLO first.")] = None,
    soak_hours: Annotated[float, typer.Option(help="With --promote-from: hours of staging soak required.")] = 1.0,
    who: Annotated[str | None, typer.Option("--as", help="Your identity (default: settings.actor).")] = None,
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Request a deployment: preflight, then a change request for approval (nothing runs until approved).

    Exit codes: 0 proposed, 2 bad input, 3 no such target, 4 refused at preflight or denied by policy.
    """
    try:
        ns, name = parse_target(target)
        selector = None
        if node_selector:
            bad = [s for s in node_selector if "=" not in s]
            if bad:
                raise ValueError(f"--node-selector takes KEY=VALUE, not {bad[0]!r}")
            selector = dict(s.split("=", 1) for s in node_selector)
        req = DeployRequest(namespace=ns, name=name, version=version, image=image,
                            args=shlex.split(args) if args is not None else None, strategy=strategy,
                            model=model, container=container, node_selector=selector, gpus=gpus,
                            mig_profile=mig_profile, promote_from=promote_from, soak_required_s=soak_hours * 3600)
    except ValidationError as e:
        fail("; ".join(f"{'.'.join(map(str, x['loc'])) or 'request'}: {x['msg']}" for x in e.errors()), 2)
    except ValueError as e:
        fail(str(e), 2)
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    requester = who or app.settings.actor

    async def show(ev: FlowEvent) -> None:
        progress(f"{ev.stage}: {ev.message}")

    try:
        out = run_in_app(app, app.deploy(req, requester=requester, via="cli", on_event=show))
    except TargetNotFound as e:
        fail(str(e), 3)
    except (DeployRefused, ValueError) as e:
        fail(str(e), 2)
    except ToolError as e:  # the API server or Prometheus said no (unreachable, forbidden): nothing proposed
        fail(f"nothing was proposed: {e}", 1)
    finally:
        app.close()
    if as_json:
        typer.echo(json.dumps(outcome_json(out), indent=2))
    else:
        typer.echo(f"deploy {req.target} ({out.plan.kind}): {out.plan.summary}\n\npreflight:\n"
                   f"{out.plan.preflight.markdown()}\n")
        if out.state is None:
            typer.echo("refused at preflight, no change request made:\n"
                       + "\n".join(f"  - {r}" for r in out.plan.preflight.reasons()))
        else:
            ch = out.state.change
            typer.echo(f"change request {ch.id}: {ch.status.value} — {ch.policy_rule}: {ch.policy_reason}\n"
                       f"review: opsagent changes show {ch.id}   approve: opsagent changes approve {ch.id}")
    if out.state is None or out.state.change.status.value in ("denied", "failed"):
        raise typer.Exit(4)


rollout_app = typer.Typer(help="Argo Rollouts: promote a paused canary or abort one, as change requests.",
                          no_args_is_help=True)


def _rollout_change(target: str, action: ActionKind, reason: str | None, who: str | None, config: Path | None,
                    use_sandbox: bool, sandbox_dir: Path, state_dir: Path | None) -> None:
    try:
        ns, name = parse_target(target)
    except ValueError as e:
        fail(str(e), 2)
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    requester = who or app.settings.actor
    spec = ChangeSpec(action=action, cluster=app.settings.kubernetes.cluster,
                      target=ObjectRef(kind="Rollout", name=name, namespace=ns))

    try:
        st = run_in_app(app, app.flow().propose(spec, reason=reason or f"{action.value} asked by {requester}",
                                                requester=requester))
    except ValueError as e:
        fail(str(e), 2)
    finally:
        app.close()
    ch = st.change
    typer.echo(f"change request {ch.id} ({action.value} {target}): {ch.status.value} — {ch.policy_rule}: "
               f"{ch.policy_reason}\napprove: opsagent changes approve {ch.id}")
    if ch.status in (ChangeStatus.DENIED, ChangeStatus.FAILED):
        raise typer.Exit(4)


ReasonOpt = Annotated[str | None, typer.Option(help="Why (shown to the approvers).")]
WhoOpt = Annotated[str | None, typer.Option("--as", help="Your identity (default: settings.actor).")]


@rollout_app.command("promote")
def promote(target: Annotated[str, typer.Argument(help="NAMESPACE/NAME of a paused Argo Rollout.")],
            reason: ReasonOpt = None, who: WhoOpt = None, config: ConfigOpt = None, use_sandbox: SandboxOpt = False,
            sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR, state_dir: StateOpt = None) -> None:
    """Propose promoting a paused Rollout past its pause (an inconclusive analysis, a manual pause step)."""
    _rollout_change(target, ActionKind.PROMOTE_ROLLOUT, reason, who, config, use_sandbox, sandbox_dir, state_dir)


@rollout_app.command("abort")
def abort(target: Annotated[str, typer.Argument(help="NAMESPACE/NAME of an Argo Rollout with a canary running.")],
          reason: ReasonOpt = None, who: WhoOpt = None, config: ConfigOpt = None, use_sandbox: SandboxOpt = False,
          sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR, state_dir: StateOpt = None) -> None:
    """Propose aborting a Rollout's canary: its pods go away and stable serves every request."""
    _rollout_change(target, ActionKind.ABORT_ROLLOUT, reason, who, config, use_sandbox, sandbox_dir, state_dir)
