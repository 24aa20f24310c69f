"""Options and helpers shared by the CLI command groups: flags, settings from flags, the environment, a config
file or a running sandbox.

The sandbox (`deploy.sandbox`) is imported only inside `sandbox_status`, so a command that never touches it
(`opsagent serve` in a cluster) never loads it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from agent.app import App, build_app
from agent.config import Settings, load_settings
from agent.telemetry import setup_tracing

DEFAULT_SANDBOX_DIR = Path.home() / ".local" / "state" / "opsagent" / "sandbox"

ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="OPSAGENT_CONFIG",
                                                help="Settings file (YAML). Environment OPSAGENT_* overrides it.")]
SandboxOpt = Annotated[bool, typer.Option("--sandbox", help="Point every integration at the running local sandbox.")]
SandboxDirOpt = Annotated[Path, typer.Option("--sandbox-dir", envvar="OPSAGENT_SANDBOX_DIR",
                                             help="Sandbox state directory.")]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", envvar="OPSAGENT_STATE_DIR",
                                               help="Local state (store, ledger, audit).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


T = TypeVar("T")


def run_in_app(app: App, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` in one event loop and close the app's async clients in that same loop (their connection
    pools belong to it: closed later, from another loop, they leak)."""
    async def go() -> T:
        try:
            return await work
        finally:
            await app.aclose_clients()

    return asyncio.run(go())


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def progress(msg: str) -> None:
    typer.secho(f"• {msg}", fg=typer.colors.CYAN, err=True)


def sandbox_status(sandbox_dir: Path) -> dict[str, Any]:
    from deploy.sandbox.sandbox import Sandbox, SandboxSettings

    st = Sandbox(SandboxSettings(dir=sandbox_dir, port_base=_port_base(sandbox_dir))).status()
    if st["state"] != "up":
        fail(f"the sandbox in {sandbox_dir} is {st['state']}; run `opsagent sandbox up` first", 3)
    return st


def _port_base(sandbox_dir: Path) -> int:
    try:
        return int(json.loads((sandbox_dir / "status.json").read_text()).get("port_base", 17000))
    except (OSError, ValueError):
        return 17000


def open_app(config: Path | None, use_sandbox: bool, sandbox_dir: Path, state_dir: Path | None) -> App:
    status = sandbox_status(sandbox_dir) if use_sandbox else None
    try:
        settings = settings_for(config, status, state_dir=str(state_dir) if state_dir else None)
        if settings.executor_mode == "socket":
            # The executor process holds the write identity; this one never does, even when a config
            # file or the sandbox names the writer's kubeconfig.
            settings = settings.without_write_credentials()
        setup_tracing(settings.tracing)  # a no-op unless tracing.enabled
        return build_app(settings)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e), 2)


def sandbox_overrides(status: dict[str, Any]) -> dict[str, Any]:
    """Point every integration at a running sandbox (from `opsagent sandbox status --json`)."""
    ep = status["endpoints"]
    kc = status["kubeconfigs"]
    return {
        "prometheus": {"url": ep["prometheus"], "scrape_interval_s": 5},
        **({"alertmanager": {"url": ep["alertmanager"]}} if ep.get("alertmanager") else {}),
        "cloudwatch": {"endpoint_url": ep["cloudwatch"], "region": "us-east-1",
                       "access_key_id": "sandbox", "secret_access_key": "sandbox"},
        "kubernetes": {"reader_kubeconfig": kc["reader"], "executor_kubeconfig": kc["executor"],
                       "cluster": status.get("cluster") or "sandbox",
                       "serving_namespaces": status.get("serving_namespaces") or []},
        # The sandbox scrapes every 5 s and its faults recover in seconds: verify on a shorter clock.
        "verification": {"window_s": 20, "baseline_s": 60, "step_s": 2.5, "rate_window_s": 15},
        **_sandbox_webhook_token(status),
    }


def _sandbox_webhook_token(status: dict[str, Any]) -> dict[str, Any]:
    """Accept the Bearer token the sandbox's Alertmanager sends (its file exists once the sandbox started)."""
    path = status.get("webhook_token_file")
    try:
        token = Path(path).read_text().strip() if path else ""
    except OSError:
        token = ""
    return {"server": {"auth_tokens": token}} if token else {}


def settings_for(config: Path | None, sandbox_status: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    merged: dict[str, Any] = {}
    if sandbox_status is not None:
        merged = sandbox_overrides(sandbox_status)
    for k, v in overrides.items():
        if v is not None:
            merged[k] = v
    return load_settings(config, **merged)
