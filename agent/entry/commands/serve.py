"""`opsagent serve`: the long-running process (Alertmanager webhook, health, metrics, incidents)."""

from __future__ import annotations

import logging

import typer
import uvicorn

from agent.entry.commands.common import (
    DEFAULT_SANDBOX_DIR,
    ConfigOpt,
    SandboxDirOpt,
    SandboxOpt,
    StateOpt,
    fail,
    open_app,
)
from agent.entry.server import Metrics
from agent.entry.slack.service import build_server


def serve(
    host: str | None = typer.Option(None, help="Address to bind (default from settings: 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default from settings: 8080)."),
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Serve the Alertmanager webhook (POST /alertmanager), /healthz, /readyz, /metrics, /incidents and,
    with `slack.enabled`, the Slack bot (/slack/events, /slack/interactivity, /slack/commands)."""
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    if app.settings.executor_mode == "socket" and app.settings.executor.socket is None:
        app.close()
        fail("executor.socket is not set: outside env: dev this server executes nothing itself; run "
             "`opsagent executor serve --socket PATH` beside it and set executor.socket (or executor.mode: "
             "in-process to give this process the write identity)", 2)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asgi, bot = build_server(app, metrics=Metrics())
    except ValueError as e:
        app.close()
        fail(str(e), 2)
    bind_host = host or app.settings.server.host
    bind_port = port or app.settings.server.port
    slack = ""
    if bot is not None:
        slack = " · Slack: " + ("Socket Mode" if app.settings.slack.socket_mode else "/slack/events, "
                                "/slack/interactivity, /slack/commands") + f" → {app.settings.slack.channel}"
    executor = (f"executor at {app.settings.executor.socket}" if app.settings.executor_mode == "socket"
                else "executor in this process")
    typer.secho(f"opsagent serving on http://{bind_host}:{bind_port} (webhook: /alertmanager){slack} · {executor}",
                err=True)
    try:
        uvicorn.run(asgi, host=bind_host, port=bind_port, log_level="warning")
    finally:
        app.close()
