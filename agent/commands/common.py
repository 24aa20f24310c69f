"""Options and helpers shared by the CLI command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from agent.app import App, build_app
from agent.cli_common import settings_for
from deploy.sandbox.sandbox import Sandbox, SandboxSettings

DEFAULT_SANDBOX_DIR = Path.home() / ".local" / "state" / "opsagent" / "sandbox"

ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="OPSAGENT_CONFIG",
                                                help="Settings file (YAML). Environment OPSAGENT_* overrides it.")]
SandboxOpt = Annotated[bool, typer.Option("--sandbox", help="Point every integration at the running local sandbox.")]
SandboxDirOpt = Annotated[Path, typer.Option("--sandbox-dir", envvar="OPSAGENT_SANDBOX_DIR",
                                             help="Sandbox state directory.")]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", envvar="OPSAGENT_STATE_DIR",
                                               help="Local state (store, ledger, audit).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def progress(msg: str) -> None:
    typer.secho(f"• {msg}", fg=typer.colors.CYAN, err=True)


def sandbox_status(sandbox_dir: Path) -> dict[str, Any]:
    st = Sandbox(SandboxSettings(dir=sandbox_dir, port_base=_port_base(sandbox_dir))).status()
    if st["state"] != "up":
        fail(f"the sandbox in {sandbox_dir} is {st['state']}; run `opsagent sandbox up` first", 3)
    return st


def _port_base(sandbox_dir: Path) -> int:
    import json

    try:
        return int(json.loads((sandbox_dir / "status.json").read_text()).get("port_base", 17000))
    except (OSError, ValueError):
        return 17000


def open_app(config: Path | None, use_sandbox: bool, sandbox_dir: Path, state_dir: Path | None) -> App:
    status = sandbox_status(sandbox_dir) if use_sandbox else None
    try:
        settings = settings_for(config, status, state_dir=str(state_dir) if state_dir else None)
        return build_app(settings)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), 2)
