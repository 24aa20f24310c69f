"""`opsagent executor serve`: the guarded executor in a process of its own, the only one with write credentials.

`opsagent serve` (webhooks, Slack, model output) reaches it over a Unix socket (`executor.socket`) and
holds no write credentials itself. The executor module (and with it `tools.k8s_write`) is imported inside
the command, so building the CLI for `opsagent serve` never loads it (tests/unit/test_executor_socket.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from agent.app import build_app
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
from agent.telemetry import setup_tracing

executor_app = typer.Typer(help="The guarded executor as its own process (the write credentials live only there).",
                           no_args_is_help=True)


@executor_app.command("serve")
def serve_executor(
    socket: Annotated[Path | None, typer.Option("--socket", help="Unix socket to listen on (default: "
                                                "executor.socket). Its directory is made 0700 and the socket "
                                                "0600.")] = None,
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Run the guarded executor on a Unix socket, with its own write identity (kubernetes.executor_kubeconfig).

    Every request names a change by id; the executor re-reads the change, its policy decision and its
    approvals from the store and re-checks them (and the target) before it writes anything.
    """
    status = sandbox_status(sandbox_dir) if use_sandbox else None
    try:
        settings = settings_for(config, status, state_dir=str(state_dir) if state_dir else None)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), 2)
    path = socket or settings.executor.socket
    if path is None:
        fail("no socket: pass --socket PATH or set executor.socket", 2)
    if settings.kubernetes.executor_kubeconfig is None:
        fail("kubernetes.executor_kubeconfig is not set: the executor process needs its own write identity "
             "(in the chart, the projected ServiceAccount token of the executor container)", 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    setup_tracing(settings.tracing)
    from agent.change.executor.service import serve_forever

    app = build_app(settings)
    try:
        executor = app.executor()
        serve_forever(executor, path, max_request_bytes=settings.executor.max_request_bytes,
                      group=settings.executor.socket_group,
                      on_ready=lambda: typer.secho(f"opsagent executor listening on {path}", err=True))
    except (ValueError, OSError) as e:
        fail(str(e), 2)
    finally:
        app.close()
