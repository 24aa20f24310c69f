"""`opsagent incident report ID`: the post-incident report of one incident, from the stored records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from agent import postmortem
from agent.entry.commands.common import (
    DEFAULT_SANDBOX_DIR,
    ConfigOpt,
    SandboxDirOpt,
    SandboxOpt,
    StateOpt,
    fail,
    open_app,
)

incident_app = typer.Typer(help="Incidents: their post-incident reports.", no_args_is_help=True)


@incident_app.command("report")
def report(
    incident_id: Annotated[str, typer.Argument(help="The incident id (inc-…), as Slack and `triage` show it.")],
    fmt: Annotated[Literal["md", "html", "json"], typer.Option("--format", help="md, html or json.")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Timeline from the first alert to resolution, evidence, what could not be checked, time to detect /
    triage / mitigate, and links to the trace and the audit records."""
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    try:
        r = app.incident_report(incident_id)
    finally:
        app.close()
    if r is None:
        fail(f"no incident {incident_id} in {app.settings.store_url.split('@')[-1]}", 4)
    text = {"md": postmortem.to_markdown, "html": postmortem.to_html, "json": postmortem.to_json}[fmt](r)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.secho(f"wrote {output}", err=True)
