"""`opsagent triage`: triage a saved Alertmanager webhook, or whatever is firing now."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import typer

from agent import incidents
from agent.entry.commands.common import (
    DEFAULT_SANDBOX_DIR,
    ConfigOpt,
    SandboxDirOpt,
    SandboxOpt,
    StateOpt,
    fail,
    open_app,
    sandbox_status,
)
from agent.guard.redact import redact_notification
from agent.models import TriageReport
from agent.triage import render


def _firing_notifications(alertmanager: str) -> list[incidents.Notification]:
    """Group what Alertmanager has firing the way a webhook would deliver it."""
    try:
        r = httpx.get(f"{alertmanager}/api/v2/alerts/groups", params={"active": "true", "silenced": "false",
                                                                      "inhibited": "false"}, timeout=10)
        r.raise_for_status()
    except httpx.HTTPError as e:
        fail(f"cannot list firing alerts from Alertmanager at {alertmanager}: {e}")
    out = []
    for g in r.json():
        alerts = [{"status": "firing", "labels": a["labels"], "annotations": a.get("annotations", {}),
                   "startsAt": a["startsAt"], "endsAt": None, "generatorURL": a.get("generatorURL", ""),
                   "fingerprint": a.get("fingerprint", "")} for a in g.get("alerts", [])
                  if a.get("status", {}).get("state") == "active"]
        if not alerts:
            continue
        body = {"version": "4", "groupKey": json.dumps(g.get("labels", {}), sort_keys=True), "status": "firing",
                "receiver": (g.get("receiver") or {}).get("name", "cli"), "groupLabels": g.get("labels", {}),
                "alerts": alerts}
        out.append(incidents.parse(json.dumps(body).encode()))
    return out


def _healthcheck_notification() -> incidents.Notification:
    """Nothing is firing: triage a fleet health check, whose right answer is usually "no anomaly"."""
    now = dt.datetime.now(dt.UTC).isoformat()
    body = {"version": "4", "groupKey": f"healthcheck:{now[:16]}", "status": "firing", "receiver": "cli",
            "alerts": [{"status": "firing", "labels": {"alertname": "FleetHealthCheck", "severity": "none"},
                        "annotations": {"summary": "on-demand health check"}, "startsAt": now}]}
    return incidents.parse(json.dumps(body).encode())


def triage(
    alert: Annotated[Path | None, typer.Option("--alert", help="A saved Alertmanager webhook body (JSON).")] = None,
    firing: Annotated[bool, typer.Option("--firing", help="Triage what Alertmanager has firing now.")] = False,
    alertmanager: Annotated[str | None, typer.Option(help="Alertmanager URL for --firing (default: sandbox's).")]
        = None,
    fmt: Annotated[str, typer.Option("--format", help="md or json.")] = "md",
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Triage an incident: gather evidence from its runbooks, rank hypotheses, propose changes."""
    if fmt not in ("md", "json"):
        fail("--format must be md or json", 2)
    if (alert is None) == (not firing):
        fail("give exactly one of --alert FILE or --firing", 2)
    if alert is not None:
        try:
            notes = [incidents.parse(alert.read_bytes())]
        except OSError as e:
            fail(f"cannot read {alert}: {e.strerror}", 2)
        except incidents.IntakeError as e:
            fail(f"{alert}: {e}", 2)
    else:
        am = alertmanager or (sandbox_status(sandbox_dir)["endpoints"]["alertmanager"] if use_sandbox else None)
        if am is None:
            fail("--firing needs --alertmanager URL or --sandbox", 2)
        notes = _firing_notifications(am) or [_healthcheck_notification()]
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    try:
        reports = asyncio.run(_run(app, notes))
    finally:
        app.close()
    _print(reports, "json" if fmt == "json" else "md")


async def _run(app: Any, notes: list[incidents.Notification]) -> list[TriageReport]:
    out = []
    try:
        for n in notes:
            incident, _ = app.store.record_notification(redact_notification(n), dt.datetime.now(dt.UTC))
            out.append(await app.triage(incident))
    finally:
        await app.aclose_clients()
    return out


def _print(reports: list[TriageReport], fmt: Literal["md", "json"]) -> None:
    if fmt == "json":
        docs = [json.loads(render.to_json(r)) for r in reports]
        typer.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        typer.echo("\n---\n\n".join(render.to_markdown(r) for r in reports))
