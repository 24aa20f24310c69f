"""The `opsagent` command line.

An entry point: it builds settings from flags and the environment, configures logging, and calls
into the agent or the sandbox. Nothing imports this module. The sandbox (`deploy.sandbox`) is imported
inside the commands that drive it, so `opsagent serve` never loads it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.entry.commands.audit import audit_app
from agent.entry.commands.changes import changes_app
from agent.entry.commands.common import DEFAULT_SANDBOX_DIR, JsonOpt, fail, progress
from agent.entry.commands.deploy import deploy as deploy_command
from agent.entry.commands.deploy import rollout_app
from agent.entry.commands.doctor import doctor as doctor_command
from agent.entry.commands.eval import eval_command
from agent.entry.commands.executor import executor_app
from agent.entry.commands.incident import incident_app
from agent.entry.commands.rightsize import report_app
from agent.entry.commands.rightsize import rightsize as rightsize_command
from agent.entry.commands.serve import serve as serve_command
from agent.entry.commands.triage import triage as triage_command

if TYPE_CHECKING:
    from deploy.sandbox.sandbox import Sandbox, SandboxSettings

app = typer.Typer(
    name="opsagent",
    help="An operations assistant for ML model serving on Kubernetes GPU clusters: triage incidents, "
    "right-size GPU workloads and run approved, audited changes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
sandbox_app = typer.Typer(
    help="A local GPU-serving sandbox: a real Kubernetes control plane with KWOK GPU nodes, "
    "Prometheus, Alertmanager, CloudWatch (moto) and a fleet simulator, all on 127.0.0.1.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")
app.command("triage")(triage_command)
app.command("serve")(serve_command)
app.command("deploy")(deploy_command)
app.add_typer(rollout_app, name="rollout")
app.command("doctor")(doctor_command)
app.add_typer(changes_app, name="changes")
app.add_typer(audit_app, name="audit")
app.add_typer(executor_app, name="executor")
app.add_typer(incident_app, name="incident")
app.command("eval")(eval_command)
app.command("rightsize")(rightsize_command)
app.add_typer(report_app, name="report")

DirOpt = Annotated[Path, typer.Option("--dir", envvar="OPSAGENT_SANDBOX_DIR", help="Sandbox state directory.")]
PortOpt = Annotated[int, typer.Option("--port-base", envvar="OPSAGENT_SANDBOX_PORT_BASE",
                                      help="Endpoints listen on 127.0.0.1 at this base + fixed offsets.")]


def _settings(dir_: Path, port_base: int, **kw: object) -> SandboxSettings:
    from deploy.sandbox.sandbox import SandboxSettings

    return SandboxSettings(dir=dir_, port_base=port_base, **kw)


@sandbox_app.command("up")
def sandbox_up(
    dir_: DirOpt = DEFAULT_SANDBOX_DIR,
    port_base: PortOpt = 17000,
    nodes: Annotated[int | None, typer.Option(help="Resize GPU pools to about N nodes (scale tests).")] = None,
    history_days: Annotated[float, typer.Option(help="Days of history to backfill into Prometheus.")] = 14,
    webhook_url: Annotated[str, typer.Option(help="Where Alertmanager posts notifications.")] =
        "http://127.0.0.1:8080/alertmanager",
    with_rollouts: Annotated[bool, typer.Option(
        "--rollouts",
        help="Also run Argo Rollouts and the Rollout-managed models (builds the controller on first use).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start the sandbox (builds the control plane from Go modules on first use) and wait until ready."""
    from deploy.sandbox.processes import StartError
    from deploy.sandbox.sandbox import Sandbox

    sb = Sandbox(_settings(dir_, port_base, nodes=nodes, history_days=history_days, webhook_url=webhook_url,
                           rollouts=with_rollouts),
                 progress=progress)
    try:
        status = sb.up()
    except (StartError, TimeoutError, FileNotFoundError) as e:
        fail(str(e))
    _print_status(status, as_json)


@sandbox_app.command("down")
def sandbox_down(dir_: DirOpt = DEFAULT_SANDBOX_DIR, port_base: PortOpt = 17000) -> None:
    """Stop every sandbox process (by the PIDs it recorded)."""
    from deploy.sandbox.sandbox import Sandbox

    stopped = Sandbox(_settings(dir_, port_base), progress=progress).down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@sandbox_app.command("status")
def sandbox_status(dir_: DirOpt = DEFAULT_SANDBOX_DIR, port_base: PortOpt = 17000, as_json: JsonOpt = False) -> None:
    """Show whether the sandbox is up, its endpoints and its kubeconfigs."""
    from deploy.sandbox.sandbox import Sandbox

    status = Sandbox(_settings(dir_, port_base)).status()
    _print_status(status, as_json)
    if status["state"] != "up":
        raise typer.Exit(3)


@sandbox_app.command("person")
def sandbox_person(
    username: Annotated[str, typer.Argument(help="The Kubernetes username (a person's `kubernetes:` entry in the "
                                                 "policy's people table).")],
    group: Annotated[list[str] | None, typer.Option(help="Groups the certificate carries (repeatable).")] = None,
    dir_: DirOpt = DEFAULT_SANDBOX_DIR,
    port_base: PortOpt = 17000,
) -> None:
    """Mint a client certificate for a person and print the path of their kubeconfig: approve with
    `opsagent changes approve ID --kubeconfig PATH`, and the sandbox's API server says who they are."""
    from deploy.sandbox import pki
    from deploy.sandbox.sandbox import Sandbox

    if not re.fullmatch(r"[a-z0-9][a-z0-9._@-]*", username):
        fail(f"username {username!r}: lower-case letters, digits, '.', '_', '@' or '-'", 2)
    sb = Sandbox(_settings(dir_, port_base))
    ca = pki.Pki(sb.dir / "pki")
    if not ca.ca_key.exists():
        fail(f"no sandbox CA key under {ca.dir}: start the sandbox (opsagent sandbox up) first", 3)
    typer.echo(pki.issue_person(ca, sb.ep.apiserver, username, tuple(group or ())))


@sandbox_app.command("inject")
def sandbox_inject(
    fault: Annotated[str, typer.Argument(help="The fault to inject; an unknown name lists the known ones.")],
    target: Annotated[str | None, typer.Option(help="Workload name (default: the fleet file's choice); for "
                                               "traffic-shift, a route or the backend that receives the weight.")]
        = None,
    dir_: DirOpt = DEFAULT_SANDBOX_DIR,
    port_base: PortOpt = 17000,
) -> None:
    """Inject a fault through the real Kubernetes API (and the simulator's traffic)."""
    from deploy.sandbox import faults as sandbox_faults
    from deploy.sandbox.fleet import Fleet
    from deploy.sandbox.sandbox import Sandbox

    sb = Sandbox(_settings(dir_, port_base))
    api = _admin_api(sb)
    try:
        record = sandbox_faults.inject(api, Fleet.load(sb.s.fleet_file), fault, target)
    except sandbox_faults.FaultError as e:
        fail(str(e), 2)
    typer.echo(json.dumps(record))


@sandbox_app.command("clear")
def sandbox_clear(dir_: DirOpt = DEFAULT_SANDBOX_DIR, port_base: PortOpt = 17000) -> None:
    """Undo every injected fault: restore versions, replicas, GPUs, traffic and route weights."""
    from deploy.sandbox import faults as sandbox_faults
    from deploy.sandbox.fleet import Fleet
    from deploy.sandbox.sandbox import Sandbox

    sb = Sandbox(_settings(dir_, port_base))
    cleared = sandbox_faults.clear(_admin_api(sb), Fleet.load(sb.s.fleet_file))
    typer.echo(f"cleared {len(cleared)} fault(s)")


@app.command("demo")
def demo(
    dir_: DirOpt = DEFAULT_SANDBOX_DIR,
    port_base: PortOpt = 17000,
    keep: Annotated[bool, typer.Option(help="Leave the sandbox running afterwards.")] = True,
    unattended: Annotated[bool, typer.Option(help="Approve as the demo's on-call user instead of asking.")] = False,
    approver: Annotated[str | None, typer.Option("--as", help="Approve as this identity (a policy role member).")]
        = None,
    scenario: Annotated[str, typer.Option(help="incident: the incident drill; deploy: a bad and a good model "
                                          "version through Argo Rollouts (builds its controller on first use).")]
        = "incident",
) -> None:
    """Run the incident drill: a bad rollout alerts, the agent triages it and proposes a rollback, you approve,
    the guarded executor rolls back, verification and the audit trail close it. `--scenario deploy` shows a
    canary aborted by analysis and a good version promoted instead."""
    from agent.entry.demo import run_demo
    from deploy.sandbox.processes import StartError

    if scenario not in ("incident", "deploy"):
        fail(f"--scenario is incident or deploy, not {scenario!r}", 2)
    settings = _settings(dir_, port_base)
    if not unattended and not sys.stdin.isatty():
        typer.echo("(no terminal to ask for approval: running --unattended)", err=True)
        unattended = True
    if scenario == "deploy":
        from agent.entry.demo_deploy import run_deploy_demo

        try:
            ok = run_deploy_demo(settings, out=typer.echo, progress=progress, keep=keep,
                                 confirm=None if unattended else (lambda q: typer.confirm(q, default=True)))
        except (StartError, TimeoutError, FileNotFoundError) as e:
            fail(str(e))
        raise typer.Exit(0 if ok else 1)
    try:
        ok = run_demo(settings, out=typer.echo, progress=progress, keep=keep, unattended=unattended,
                      approver=approver, confirm=lambda q: typer.confirm(q, default=True))
    except (StartError, TimeoutError, FileNotFoundError) as e:
        fail(str(e))
    raise typer.Exit(0 if ok else 1)


def _admin_api(sb: Sandbox):  # type: ignore[no-untyped-def]
    from deploy.sandbox.cluster import api_client

    status = sb.status()
    if status["state"] != "up":
        fail(f"the sandbox in {sb.dir} is {status['state']}; run `opsagent sandbox up` first", 3)
    return api_client(Path(status["kubeconfigs"]["admin"]))


def _print_status(status: dict[str, object], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    typer.echo(f"sandbox: {status['state']}  ({status['dir']})")
    typer.echo("endpoints:")
    for k, v in dict(status["endpoints"]).items():  # type: ignore[call-overload]
        typer.echo(f"  {k:20} {v}")
    typer.echo("kubeconfigs:")
    for k, v in dict(status["kubeconfigs"]).items():  # type: ignore[call-overload]
        typer.echo(f"  {k:20} {v}")
    if status.get("timings"):
        typer.echo(f"start-up timings (s): {status['timings']}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    app()


if __name__ == "__main__":
    main()
