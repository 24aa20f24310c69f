"""`opsagent doctor`: check every configured integration and print what works, what does not and the fix."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

import typer

from agent.entry.commands.common import (
    DEFAULT_SANDBOX_DIR,
    ConfigOpt,
    SandboxDirOpt,
    SandboxOpt,
    StateOpt,
    fail,
    sandbox_status,
    settings_for,
)
from agent.health import Status, exit_code, run_checks

MARK = {Status.OK: ("✔", typer.colors.GREEN), Status.FAIL: ("✘", typer.colors.RED),
        Status.WARN: ("!", typer.colors.YELLOW), Status.SKIP: ("–", typer.colors.BRIGHT_BLACK)}


def doctor(
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
    fmt: Annotated[Literal["text", "json"], typer.Option("--format", help="text for people, json for CI.")] = "text",
) -> None:
    """Check Prometheus, Alertmanager's route, the Kubernetes identities (can-i), CloudWatch, Slack, the model
    provider, the store, the audit log and its sinks, and tracing. Exit 1 when any check fails (CI)."""
    status = sandbox_status(sandbox_dir) if use_sandbox else None
    try:
        settings = settings_for(config, status, state_dir=str(state_dir) if state_dir else None)
    except (ValueError, FileNotFoundError) as e:
        fail(f"the settings do not load: {e}", 2)
    checks = asyncio.run(run_checks(settings))
    code = exit_code(checks)
    if fmt == "json":
        typer.echo(json.dumps({"ok": code == 0, "checks": [c.model_dump(mode="json") for c in checks]}, indent=2))
        raise typer.Exit(code)
    for c in checks:
        mark, colour = MARK[c.status]
        took = f"  ({c.latency_ms:.0f} ms)" if c.latency_ms is not None else ""
        typer.secho(f"{mark} {c.name:20} {c.detail}{took}", fg=colour)
        if c.fix and c.status != Status.OK:
            typer.echo(f"  {'':20} fix: {c.fix}")
    failed = [c.name for c in checks if c.status == Status.FAIL]
    typer.echo(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed or skipped"
               + (f"; failing: {', '.join(failed)}" if failed else ""))
    raise typer.Exit(code)
