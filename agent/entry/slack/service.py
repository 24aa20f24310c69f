"""Assemble the server with the Slack bot: the one function `opsagent serve` and the tests call."""

from __future__ import annotations

import dataclasses
import logging

from starlette.applications import Starlette

from agent.app import App
from agent.entry.deployments_api import PREFIX, PipelineTokens, deployment_routes
from agent.entry.http_guard import HttpSecurity
from agent.entry.server import Metrics, Replica, create_app
from agent.entry.slack.app import SlackBot
from agent.entry.slack.reports import CostReportPoster
from agent.models import Incident, TriageReport
from agent.rightsize.schedule import CronSchedule
from tools.rightsize.catalog import PriceCatalog

log = logging.getLogger("opsagent.serve")


def _logged(incident: Incident, report: TriageReport, app: App, metrics: Metrics) -> TriageReport:
    # The LLM reasoner falls back to the rules ranking on any model failure; count those for the dashboard.
    run = getattr(app.reasoner, "runs", {}).get(incident.id)
    if run is not None and run.fallback:
        metrics.model_errors.labels(provider=app.settings.llm.provider).inc()
    top = report.top
    log.warning("triaged %s: %s%s", incident.id, report.status,
                f" — {top.title} ({top.confidence:.0%})" if top else "")
    return report


def build_server(app: App, *, metrics: Metrics | None = None,
                 bot: SlackBot | None = None) -> tuple[Starlette, SlackBot | None]:
    """The `serve` HTTP app; with `slack.enabled`, the bot's endpoints, hooks and triage path are wired in."""
    metrics = metrics or Metrics()
    metrics.model_errors.labels(provider=app.settings.llm.provider)  # 0 until the first fallback
    try:
        metrics.set_prices(PriceCatalog.load(app.settings.rightsize.price_catalog))
    except ValueError as e:  # the cost panels stay empty; everything else works
        log.warning("GPU prices not exported: %s", e)
    # Replicas sharing a store share triage through leases; a dead replica's incidents are swept up.
    replica = Replica(lease_s=app.settings.server.triage_lease_s, sweep_s=app.settings.server.triage_sweep_s,
                      retriage_debounce_s=app.settings.server.retriage_debounce_s)
    tokens, pairs = app.settings.server.credentials()
    security = HttpSecurity.build(tokens, pairs, app.settings.server.max_body_bytes)
    # The CI API checks each pipeline's own token (and is closed when none is configured).
    security = dataclasses.replace(security, self_authenticated=(*security.self_authenticated, PREFIX))
    pipelines = app.settings.server.pipeline_tokens
    ci_routes = deployment_routes(app, PipelineTokens.parse(pipelines.get_secret_value() if pipelines else ""),
                                  wait_s=app.settings.server.deploy_wait_s)
    if not security.auth_on:
        log.warning("server.auth_tokens is unset (env: dev): the webhook and /incidents accept anyone")
    if bot is None and app.settings.slack.enabled:
        bot = SlackBot(app, metrics)
    if bot is None:
        if app.settings.rightsize.schedule:
            log.warning("rightsize.schedule is set but slack.enabled is false: no scheduled cost report is posted")

        async def triage_only(incident: Incident) -> TriageReport:
            return _logged(incident, await app.triage(incident), app, metrics)

        return create_app(app.store, triage_only, metrics, routes=ci_routes, on_shutdown=[app.aclose_clients],
                          replica=replica,
                          security=security, max_alerts=app.settings.server.max_alerts_per_incident,
                          health=app.health), None
    startup = [bot.start, *([bot.start_socket_mode] if app.settings.slack.socket_mode else [])]
    shutdown = [bot.stop, app.aclose_clients]
    rs = app.settings.rightsize
    if rs.schedule:
        # The scheduled cost report: every replica checks, the schedule lease lets one post each tick.
        poster = CostReportPoster(app, bot.client, rs.schedule_channel or bot.cfg.channel, CronSchedule(rs.schedule),
                                  metrics=metrics)
        startup.append(poster.start)
        shutdown.insert(0, poster.stop)
    routes = [*ci_routes, *([] if app.settings.slack.socket_mode else bot.routes())]
    async def triage_with_bot(incident: Incident) -> TriageReport:
        return _logged(incident, await bot.triage(incident), app, metrics)

    return create_app(app.store, triage_with_bot, metrics, routes=routes, on_incident=bot.on_incident,
                      on_startup=startup, on_shutdown=shutdown, replica=replica, security=security,
                      max_alerts=app.settings.server.max_alerts_per_incident, health=app.health), bot
