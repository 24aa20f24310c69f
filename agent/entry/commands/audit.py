"""`opsagent audit verify|show|export`."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated

import typer

from agent.audit.log import AuditTampered
from agent.entry.commands.common import DEFAULT_SANDBOX_DIR, ConfigOpt, SandboxDirOpt, StateOpt, open_app

audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


@audit_app.command("verify")
def verify(
    config: ConfigOpt = None, sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR, state_dir: StateOpt = None
) -> None:
    """Recompute the hash chain and check it against every signed checkpoint; sign the head only if it holds.

    Exit 1 on tampering (and nothing is signed then).
    """
    app = open_app(config, False, sandbox_dir, state_dir)
    signed = None
    try:
        report = app.audit.verify()
        if report.ok:
            try:
                signed = app.audit.checkpoint()
            except AuditTampered as e:  # appended-to and tampered with between the two reads
                report = replace(report, problems=e.problems)
    finally:
        app.close()
    if report.ok:
        typer.echo(
            f"OK: {report.records} records, chain intact through record {report.last_seq}, "
            f"{report.checkpoints} signed checkpoint(s) match, the newest at {report.checkpoint_seq}; "
            f"signed record {signed.seq if signed else report.last_seq} ({report.seconds:.2f}s)"
        )
        return
    typer.secho(f"TAMPERED: {len(report.problems)} problem(s) in {report.records} records", fg="red", err=True)
    for p in report.problems[:20]:
        typer.echo(f"  record {p.seq}: {p.kind}: {p.detail}")
    raise typer.Exit(1)


@audit_app.command("show")
def show(
    incident: Annotated[str | None, typer.Option(help="Only this incident's records.")] = None,
    config: ConfigOpt = None,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Print audit records as a table."""
    app = open_app(config, False, sandbox_dir, state_dir)
    try:
        for e in app.audit.events(incident):
            typer.echo(
                f"{e['seq']:>6} {e['at'][:19]} {e['kind']:<16} {e['actor']:<22} {e['decision']:<16} "
                f"{e['action'][:60]}" + (f" — {e['reason'][:80]}" if e["reason"] else "")
            )
    finally:
        app.close()


@audit_app.command("export")
def export(
    incident: Annotated[str | None, typer.Option(help="Only this incident's records.")] = None,
    config: ConfigOpt = None,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Print audit records as JSON Lines (with their hashes, so a copy can be verified elsewhere)."""
    app = open_app(config, False, sandbox_dir, state_dir)
    try:
        for e in app.audit.events(incident):
            typer.echo(json.dumps(e, sort_keys=True))
    finally:
        app.close()
