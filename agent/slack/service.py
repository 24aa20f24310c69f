"""Assemble the server with the Slack bot: the one function `opsagent serve` and the tests call."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from agent.app import App
from agent.changes import ChangeRequest
from agent.server import Metrics, create_app
from agent.slack.app import SlackBot
from agent.verify import VerifySettings, verify

log = logging.getLogger(__name__)


def make_verifier(app: App, settings: VerifySettings):  # type: ignore[no-untyped-def]
    """Verification through the read-only identity (Prometheus + the reader kubeconfig)."""

    async def verifier(ch: ChangeRequest) -> tuple[str, str]:
        prom = app.clients.get("prometheus")
        reader = app.clients.get("k8s_read")
        if prom is None or reader is None:
            return "inconclusive", "verification needs Prometheus and kubernetes.reader_kubeconfig"
        v = await verify(ch, ch.created_at, prom, reader, settings)
        return v.outcome.value, v.summary()

    return verifier


def build_server(app: App, *, metrics: Metrics | None = None, bot: SlackBot | None = None,
                 verify_settings: VerifySettings | None = None) -> tuple[Starlette, SlackBot | None]:
    """The `serve` HTTP app; with `slack.enabled`, the bot's endpoints, hooks and triage path are wired in."""
    metrics = metrics or Metrics()
    if bot is None and app.settings.slack.enabled:
        bot = SlackBot(app, metrics, verifier=make_verifier(app, verify_settings or VerifySettings()))
    if bot is None:

        async def triage_only(incident):  # type: ignore[no-untyped-def]
            return await app.triage(incident)

        return create_app(app.store, triage_only, metrics), None
    startup = [bot.start_socket_mode] if app.settings.slack.socket_mode else []
    routes = [] if app.settings.slack.socket_mode else bot.routes()
    return create_app(app.store, bot.triage, metrics, routes=routes, on_incident=bot.on_incident,
                      on_startup=startup, on_shutdown=[bot.stop]), bot
