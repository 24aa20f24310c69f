"""`opsagent serve`: the long-running process (Alertmanager webhook, health, metrics, incidents)."""

from __future__ import annotations

import logging

import typer
import uvicorn

from agent.commands.common import DEFAULT_SANDBOX_DIR, ConfigOpt, SandboxDirOpt, SandboxOpt, StateOpt, open_app
from agent.models import Incident
from agent.server import Replica, create_app


def serve(
    host: str | None = typer.Option(None, help="Address to bind (default from settings: 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default from settings: 8080)."),
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Serve the Alertmanager webhook (POST /alertmanager), /healthz, /readyz, /metrics and /incidents."""
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    log = logging.getLogger("opsagent.serve")

    async def triage(incident: Incident) -> None:
        report = await app.triage(incident)
        top = report.top
        log.warning("triaged %s: %s%s", incident.id, report.status,
                    f" — {top.title} ({top.confidence:.0%})" if top else "")

    replica = Replica(lease_s=app.settings.server.triage_lease_s, sweep_s=app.settings.server.triage_sweep_s)
    asgi = create_app(app.store, triage, replica=replica)
    bind_host = host or app.settings.server.host
    bind_port = port or app.settings.server.port
    typer.secho(f"opsagent serving on http://{bind_host}:{bind_port} (webhook: /alertmanager)", err=True)
    try:
        uvicorn.run(asgi, host=bind_host, port=bind_port, log_level="warning")
    finally:
        app.close()
