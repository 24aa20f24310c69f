"""`opsagent serve`: the HTTP entry point (Alertmanager webhook, health, metrics, incidents).

Intake is synchronous and cheap — validate, fold into the incident, commit — and answers within
milliseconds; triage is queued to a background worker so Alertmanager (and later Slack) never wait
on it. A malformed or oversized body gets a 4xx with the reason and stores nothing.

Several replicas can serve one shared store: a worker triages an incident only while it holds the
store lease `triage:<incident id>` (renewed while it works), and every replica sweeps the store for
firing incidents no report covers yet. So an alert delivered to one replica is triaged once, and an
incident whose replica died mid-triage is picked up by another when the lease expires.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agent import incidents
from agent.entry.http_guard import HttpGuard, HttpSecurity
from agent.guard.redact import redact_notification
from agent.models import Incident, IncidentStatus
from agent.storage.store import Store
from tools.rightsize.catalog import PriceCatalog

log = logging.getLogger(__name__)

TriageFn = Callable[[Incident], Awaitable[Any]]
WEBHOOK_PATH = "/alertmanager"


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.webhooks = Counter("opsagent_webhooks_total", "Alertmanager webhook deliveries by outcome.",
                                ["outcome"], registry=r)
        self.incidents = Counter("opsagent_incidents_opened_total", "Incidents opened.", registry=r)
        self.triage_seconds = Histogram("opsagent_triage_seconds", "Alert-to-report triage latency.",
                                        buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=r)
        self.triage_errors = Counter("opsagent_triage_errors_total", "Triage runs that failed.", registry=r)
        self.queue = Gauge("opsagent_triage_queue_depth", "Incidents waiting for triage.", registry=r)
        self.changes = Counter("opsagent_changes_proposed_total", "Change requests proposed, by policy outcome.",
                               ["status"], registry=r)
        self.approvals = Counter("opsagent_approval_decisions_total",
                                 "Approve/reject decisions by outcome (recorded, refused).",
                                 ["decision", "outcome", "via"], registry=r)
        self.executions = Counter("opsagent_executions_total", "Change executions by final stage.", ["stage"],
                                  registry=r)
        self.chat_requests = Counter("opsagent_slack_requests_total", "Slack deliveries by kind and outcome.",
                                     ["kind", "outcome"], registry=r)
        self.cost_reports = Counter("opsagent_cost_reports_total",
                                    "Scheduled cost reports by outcome (posted, failed).", ["outcome"], registry=r)
        for outcome in ("posted", "failed"):
            self.cost_reports.labels(outcome=outcome)  # exported as 0 before the first tick
        self.chat_errors = Counter("opsagent_slack_api_errors_total",
                                   "Slack Web API calls that failed after retries.", ["method"], registry=r)
        self.model_errors = Counter("opsagent_model_errors_total", "Triages whose LLM reasoner failed (model "
                                    "error, timeout or invalid answer) and fell back to the rules ranking.",
                                    ["provider"], registry=r)
        self.gpu_price = Gauge("opsagent_gpu_price_per_hour_usd", "Price of one GPU-hour by instance type, from "
                               "the right-sizing price catalog (the fleet dashboard's cost per model).",
                               ["instance_type", "gpu_product"], registry=r)
        # Every label set a dashboard panel selects is exported as 0 from the start, so a panel shows 0
        # (nothing happened) rather than "No data" (is it even running?).
        for outcome in ("accepted", "duplicate", "rejected"):
            self.webhooks.labels(outcome=outcome)
        for status in ("pending_approval", "approved", "denied", "rejected"):
            self.changes.labels(status=status)
        for decision in ("approve", "reject"):
            for outcome in ("recorded", "refused"):
                for via in ("slack", "cli"):
                    self.approvals.labels(decision=decision, outcome=outcome, via=via)
        for stage in ("executing", "verified", "rolled_back", "regression", "failed", "refused", "unverified",
                      "inconclusive"):
            self.executions.labels(stage=stage)
        for method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            self.chat_errors.labels(method=method)
        for kind in ("events", "interactivity", "commands"):
            for outcome in ("accepted", "bad_signature", "replayed", "duplicate"):
                self.chat_requests.labels(kind=kind, outcome=outcome)

    def set_prices(self, catalog: PriceCatalog) -> None:
        for name, it in catalog.instance_types.items():
            if it.gpus:
                self.gpu_price.labels(instance_type=name, gpu_product=it.gpu_product or "").set(it.price_per_gpu_hour)


@dataclass(frozen=True)
class Replica:
    """How this process shares triage with other replicas of the same store."""

    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    lease_s: float = 60.0
    sweep_s: float | None = 15.0
    retriage_debounce_s: float = 10.0  # at most one triage of an incident per this long; updates fold in


class TriageWorker:
    """Runs triage for queued incidents in the background, a few at a time, one replica per incident."""

    def __init__(self, triage: TriageFn, metrics: Metrics, concurrency: int = 2, *, store: Store | None = None,
                 replica: Replica | None = None, load: Callable[[str], Incident | None] | None = None) -> None:
        self.triage = triage
        self.metrics = metrics
        self.load = load or (store.incident if store is not None else None)
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.concurrency = concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self.inflight: set[str] = set()
        self.queued: set[str] = set()
        self.store = store
        self.replica = replica or Replica()
        # The latest version of each queued incident; None: read it from the store when its triage starts.
        self.newest: dict[str, Incident | None] = {}
        self._delayed: set[asyncio.Task[None]] = set()
        self.last_start: dict[str, float] = {}

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"triage-{i}") for i in range(self.concurrency)]
        if self.store is not None and self.replica.sweep_s:
            self._tasks.append(asyncio.create_task(self._sweep(), name="triage-sweep"))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._delayed]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _requeue(self, incident_id: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self.queue.put_nowait(incident_id)

    def submit(self, incident: Incident | str) -> None:
        """Queue a triage of an incident (or of its id: then it is read from the store when its triage
        starts, so it is the newest version); if one is queued already, it will use this newer version."""
        iid, version = (incident, None) if isinstance(incident, str) else (incident.id, incident)
        self.newest[iid] = version
        if iid in self.queued:
            return
        self.queued.add(iid)
        self.queue.put_nowait(iid)
        self.metrics.queue.set(self.queue.qsize())

    async def _sweep(self) -> None:
        """Pick up incidents no replica has triaged (a dead replica's, or ones that arrived meanwhile)."""
        assert self.store is not None and self.replica.sweep_s
        while True:
            await asyncio.sleep(self.replica.sweep_s)
            try:
                pending = await asyncio.to_thread(self.store.needing_triage, 50)
                for inc in pending:
                    if inc.id in self.queued or inc.id in self.inflight:
                        continue
                    if await asyncio.to_thread(self.store.lease_holder, f"triage:{inc.id}") is None:
                        self.submit(inc)
            except Exception:
                log.exception("triage sweep failed; retrying in %ss", self.replica.sweep_s)

    async def _work(self) -> None:
        while True:
            iid = await self.queue.get()
            # Debounce: a burst of deliveries re-triages once, with the newest version, after the quiet time;
            # meanwhile the incident stays "queued", so submit() only records the newer version.
            wait = self.last_start.get(iid, -1e9) + self.replica.retriage_debounce_s - time.monotonic()
            if wait > 0:
                task = asyncio.create_task(self._requeue(iid, wait))
                self._delayed.add(task)
                task.add_done_callback(self._delayed.discard)
                self.queue.task_done()
                continue
            self.queued.discard(iid)
            version = self.newest.pop(iid, None)
            try:
                incident = version or (await asyncio.to_thread(self.load, iid) if self.load else None)
            except Exception:
                incident = None
                log.exception("reading incident %s for triage failed", iid)
            if incident is None:
                self.queue.task_done()
                continue
            self.last_start[incident.id] = time.monotonic()
            if len(self.last_start) > 10_000:
                self.last_start.clear()
            self.metrics.queue.set(self.queue.qsize())
            t0 = time.monotonic()
            self.inflight.add(incident.id)
            lease = f"triage:{incident.id}"
            heartbeat: asyncio.Task[None] | None = None
            try:
                if self.store is not None:
                    if not await asyncio.to_thread(self.store.try_lease, lease, self.replica.holder,
                                                   self.replica.lease_s):
                        log.info("%s is being triaged by another replica", incident.id)
                        continue
                    heartbeat = asyncio.create_task(self._renew(lease))
                    if await asyncio.to_thread(self._covered, incident):
                        continue  # another replica triaged this version while it waited in our queue
                await self.triage(incident)
                self.metrics.triage_seconds.observe(time.monotonic() - t0)
            except Exception:
                self.metrics.triage_errors.inc()
                log.exception("triage of %s failed", incident.id)
            finally:
                if heartbeat is not None:
                    heartbeat.cancel()
                    await asyncio.gather(heartbeat, return_exceptions=True)
                    await asyncio.to_thread(self.store.release_lease, lease, self.replica.holder)  # type: ignore[union-attr]
                self.inflight.discard(incident.id)
                self.queue.task_done()

    def _covered(self, incident: Incident) -> bool:
        assert self.store is not None
        report = self.store.latest_report(incident.id)
        return report is not None and report.finished >= incident.updated_at

    async def _renew(self, lease: str) -> None:
        assert self.store is not None
        while True:
            await asyncio.sleep(self.replica.lease_s / 3)
            await asyncio.to_thread(self.store.try_lease, lease, self.replica.holder, self.replica.lease_s)


IncidentHook = Callable[[Incident], Awaitable[None]]


def create_app(store: Store, triage: TriageFn | None, metrics: Metrics | None = None, *,
               routes: Sequence[BaseRoute] = (), on_incident: IncidentHook | None = None,
               on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
               on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
               replica: Replica | None = None, security: HttpSecurity | None = None,
               max_alerts: int = incidents.MAX_ALERTS_PER_INCIDENT,
               health: Callable[[], Awaitable[Sequence[Any]]] | None = None) -> Starlette:
    """The HTTP app. Every request passes `security` first (credentials, body limit; see http_guard).

    `routes` are mounted beside the webhook (the Slack endpoints); `on_incident` runs in the
    background for every incident a delivery changed (opened, updated, resolved). With `replica`, triage is
    shared with other replicas of `store` through leases."""
    metrics = metrics or Metrics()
    worker = TriageWorker(triage, metrics, store=store if replica else None, replica=replica,
                          load=store.incident) if triage else None
    hooks: set[asyncio.Task[None]] = set()

    def notify(incident_id: str) -> None:
        if on_incident is None:
            return
        task = asyncio.create_task(_guarded(on_incident, store, incident_id))
        hooks.add(task)
        task.add_done_callback(hooks.discard)

    async def alertmanager(body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            notification = redact_notification(incidents.parse(body))
            # Only what the delivery changed is written and read back; hooks and triage read the whole incident
            # later, off the request path. Answered once the delivery is committed (with others, on Postgres).
            rec = await store.arecord_alerts(notification, dt.datetime.now(dt.UTC), max_alerts)
        except incidents.IntakeError as e:  # malformed, or holding a value the store cannot keep
            metrics.webhooks.labels(outcome="rejected").inc()
            return e.status, {"error": str(e)}
        metrics.webhooks.labels(outcome="accepted" if rec.changed else "duplicate").inc()
        if rec.opened:
            metrics.incidents.inc()
        if rec.changed:
            notify(rec.incident_id)
        if rec.changed and rec.status == IncidentStatus.FIRING and worker:
            worker.submit(rec.incident_id)
        return 200, {"incident": rec.incident_id, "status": rec.status.value, "changed": rec.changed}

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(_: Request) -> Response:
        if health is not None:
            # Not ready only when a required dependency (the store) fails: an unreachable Prometheus
            # degrades triage but must not take the pod out of the Service, or Alertmanager's deliveries
            # (stored regardless) would fail too. Every probe is listed, with upstream's words.
            results = await health()
            ready = all(r.ok for r in results if r.required)
            body = {"ready": ready, "degraded": [r.name for r in results if not r.ok],
                    "checks": {r.name: {"ok": r.ok, "detail": r.detail, "latency_ms": r.latency_ms}
                               for r in results}}
            return JSONResponse(body, status_code=200 if ready else 503)
        try:
            await asyncio.to_thread(store.incidents, None, 1)
        except Exception as e:
            return JSONResponse({"ready": False, "store": str(e)}, status_code=503)
        return JSONResponse({"ready": True})

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def list_incidents(request: Request) -> Response:
        status = request.query_params.get("status")
        items = await asyncio.to_thread(store.incidents, IncidentStatus(status) if status else None, 100)
        return JSONResponse([i.model_dump(mode="json", exclude={"alerts"}) for i in items])

    async def get_incident(request: Request) -> Response:
        iid = request.path_params["id"]
        inc = await asyncio.to_thread(store.incident, iid)
        if inc is None:
            return JSONResponse({"error": f"no incident {iid}"}, status_code=404)
        report = await asyncio.to_thread(store.latest_report, iid)
        return JSONResponse({"incident": inc.model_dump(mode="json"),
                             "report": report.model_dump(mode="json") if report else None})

    @asynccontextmanager
    async def lifespan(_: Starlette):  # type: ignore[no-untyped-def]
        if worker:
            worker.start()
        for start in on_startup:
            await start()
        yield
        for stop in on_shutdown:
            await stop()
        if worker:
            await worker.stop()
        for t in list(hooks):
            t.cancel()

    guard = security or HttpSecurity()
    webhook = _Webhook(alertmanager)
    app = _Server(routes=[
        Route(WEBHOOK_PATH, webhook, methods=["POST"]),  # reached only by a redirect ("/alertmanager/")
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_endpoint),
        Route("/incidents", list_incidents), Route("/incidents/{id}", get_incident),
        *routes,
    ], lifespan=lifespan, middleware=[Middleware(HttpGuard, security=guard)])
    app.intake = HttpGuard(webhook, security=guard)
    app.state.worker = worker
    app.state.metrics = metrics
    return app


class _Server(Starlette):
    """Starlette, with the webhook (`POST /alertmanager`, the hot path) served ahead of its middleware stack and
    router, behind the same guard: they cost about as much CPU per delivery as its database statement."""

    intake: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == WEBHOOK_PATH:
            await self.intake(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _Webhook:
    """`POST /alertmanager` as a plain ASGI app: read the body (the guard bounds it), answer JSON."""

    def __init__(self, handle: Callable[[bytes], Awaitable[tuple[int, dict[str, Any]]]]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": f"{WEBHOOK_PATH} accepts POST only"}, [(b"allow", b"POST")])
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender went away before the body was complete: nothing to store
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            status, answer = await self.handle(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except Exception:
            # Not stored, or not known to be (the store failed): the sender retries, and a retry folds in as
            # a re-send. 503 rather than 500, because Alertmanager retries both and this is the store's state.
            log.exception("storing a webhook delivery failed")
            status, answer = 503, {"error": "the delivery could not be stored; retry"}
        await _answer(send, status, answer)


async def _answer(send: Send, status: int, answer: dict[str, Any],
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(answer)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


async def _guarded(hook: IncidentHook, store: Store, incident_id: str) -> None:
    try:
        incident = await asyncio.to_thread(store.incident, incident_id)
        if incident is not None:
            await hook(incident)
    except Exception:  # a notification failure is logged; the incident is already stored
        log.exception("incident hook failed for %s", incident_id)
