"""The Slack bot: Bolt listeners for buttons, thread questions and `/ops`, mounted on `opsagent serve`.

Every listener acknowledges and queues its work for a small pool of workers (`later`), so Bolt answers
Slack at once and a burst of clicks is acknowledged before any of it is worked on; Slack's 3-second
limit holds whatever a triage or an execution is doing. In front of Bolt, `SlackEndpoint` rejects replays of a signed
request (401) and answers retried Events API deliveries (`X-Slack-Retry-Num`) without handling
them twice. Button clicks and `/ops approve` go through the same decision path as the CLI
(`flow.decide`), which checks policy (Slack user id → role from the policy file, no self-approval)
and audits every decision, allowed or refused; a refusal is shown only to the person who clicked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent import postmortem
from agent.app import App
from agent.change.deploy import DeployRequest, parse_target
from agent.change.executor.client import ExecutorUnavailable
from agent.change.executor.outcome import ExecutionRefused
from agent.change.flow import ChangeFlow, FlowEvent
from agent.change.models import ChangeRequest, ChangeSpec, ChangeStage, ChangeStatus
from agent.config import SlackConfig
from agent.entry.server import Metrics
from agent.entry.slack import blocks
from agent.entry.slack.blocks import ACTION_APPROVE, ACTION_REJECT, Stage
from agent.entry.slack.chat import ThreadChat
from agent.entry.slack.deploys import parse_deploy
from agent.entry.slack.incidents import SlackNotifier
from agent.entry.slack.reports import CreateChangeButton
from agent.models import ActionKind, Incident, IncidentStatus, ObjectRef, TriageReport
from agent.rightsize import report
from agent.rightsize.report import CREATE_ACTION_ID
from agent.rightsize.service import run as rightsize_run
from agent.storage.store import ChatMessage, Store
from agent.telemetry import trace_url

log = logging.getLogger(__name__)

REPLAY_WINDOW = dt.timedelta(minutes=6)  # Slack signatures older than 5 minutes are rejected anyway
EXECUTABLE = {ActionKind.ROLLBACK, ActionKind.SCALE, ActionKind.DEPLOY, ActionKind.SET_GPU_RESOURCES,
              ActionKind.PAUSE_ROLLOUT, ActionKind.RESUME_ROLLOUT, ActionKind.CORDON_NODE, ActionKind.DRAIN_NODE,
              ActionKind.RESTART_POD}
C = ChangeStage
# ChangeFlow stages → what the incident's top message says.
FLOW_STAGE = {C.EXECUTING: Stage.EXECUTING, C.VERIFYING: Stage.EXECUTING, C.VERIFIED: Stage.RESOLVED,
              C.ROLLING_BACK: Stage.ROLLED_BACK, C.ROLLED_BACK: Stage.ROLLED_BACK, C.REGRESSION: Stage.FAILED,
              C.FAILED: Stage.FAILED, C.REFUSED: Stage.FAILED, C.REJECTED: Stage.REJECTED,
              C.UNVERIFIED: Stage.APPLIED, C.INCONCLUSIVE: Stage.APPLIED, C.EXECUTING_ELSEWHERE: Stage.EXECUTING}
FLOW_ICON = {C.DECIDED: ":ballot_box_with_check:", C.EXECUTING: ":gear:", C.VERIFYING: ":stopwatch:",
             C.VERIFIED: ":white_check_mark:", C.ROLLING_BACK: ":leftwards_arrow_with_hook:",
             C.ROLLED_BACK: ":leftwards_arrow_with_hook:", C.REGRESSION: ":x:", C.FAILED: ":x:",
             C.REFUSED: ":no_entry:", C.REJECTED: ":no_entry_sign:", C.DENIED: ":no_entry:",
             C.UNVERIFIED: ":grey_question:", C.INCONCLUSIVE: ":grey_question:",
             C.AWAITING_APPROVAL: ":hourglass_flowing_sand:"}
OUTCOMES = {C.VERIFIED, C.ROLLED_BACK, C.REGRESSION, C.FAILED, C.REFUSED, C.UNVERIFIED, C.INCONCLUSIVE}
QUIET = {C.AWAITING_APPROVAL, C.APPROVED, C.NEW}  # the change block shows these; no thread post


def web_client(cfg: SlackConfig) -> AsyncWebClient:
    """The Web API client: 429s wait for `Retry-After` and are retried, as are dropped connections."""
    token = cfg.bot_token.get_secret_value() if cfg.bot_token else None
    kwargs: dict[str, Any] = {"base_url": cfg.api_url} if cfg.api_url else {}
    return AsyncWebClient(token=token, timeout=cfg.timeout_s, retry_handlers=[
        AsyncRateLimitErrorRetryHandler(max_retry_count=cfg.rate_limit_retries),
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
    ], **kwargs)


SEEN_KEEP = dt.timedelta(hours=1)  # how long event ids and answered messages are remembered
WORKERS = 8  # post-acknowledgement jobs run at once (a decision holds one through execution and verification)


class SeenMarks:
    """Deliveries already handled: request signatures (replays), event ids (retries), answered messages.

    A delivery counts as first only once the store says so: every replica on the same store inserts its
    mark with an atomic insert-if-absent, so a signed request replayed to another replica is refused
    there too. To keep the acknowledgement fast under a burst, marks arriving while one transaction is
    in flight wait for the next, which carries them all (group commit: one disk sync per batch, not per
    request). A key already seen by this process is refused from memory without a round trip.
    If the store cannot be reached the process's own marks still decide (logged), so Slack gets its
    acknowledgement; replicas then guard only their own deliveries until the store is back.
    """

    def __init__(self, store: Store, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock
        self._mem: dict[str, dt.datetime] = {}
        self._pending: list[tuple[str, dt.datetime, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def load(self) -> None:
        for key, at in await asyncio.to_thread(self.store.seen_since, self.clock() - SEEN_KEEP):
            self._mem[key] = at

    async def first(self, key: str, keep: dt.timedelta) -> bool:
        """True the first time `key` is offered within `keep` by any replica on the store; records it."""
        now = self.clock()
        at = self._mem.get(key)
        if at is not None and now - at < keep:
            return False
        self._mem[key] = now
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((key, now - keep, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            now = self.clock()
            try:
                won = await asyncio.to_thread(self.store.claim_seen, [(k, before) for k, before, _ in batch], now,
                                              now - SEEN_KEEP)
            except Exception:
                log.exception("could not record %d delivery marks in the store; deciding from memory", len(batch))
                won = {k for k, _, _ in batch}
            for key, _, fut in batch:
                if not fut.done():
                    fut.set_result(key in won)
            old = [k for k, at in self._mem.items() if now - at > SEEN_KEEP]
            for k in old:
                del self._mem[k]

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


class SlackBot:
    """Everything Slack-facing in `opsagent serve`, built from the app's parts."""

    def __init__(self, app: App, metrics: Metrics, *, client: AsyncWebClient | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        cfg = app.settings.slack
        if cfg.signing_secret is None:
            raise ValueError("slack.signing_secret is required when slack.enabled (Slack signs every request)")
        if cfg.bot_token is None:
            raise ValueError("slack.bot_token is required when slack.enabled (the bot posts with it)")
        self.app = app
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self.client = client or web_client(cfg)
        self.notifier = SlackNotifier(self.client, app.store, app.ledger, cfg.channel, metrics)
        self._flow: ChangeFlow | None = None
        self.chat = ThreadChat(app.triage_runner(), app.settings.kubernetes.cluster, app.settings.llm)
        self.signatures = SignatureVerifier(cfg.signing_secret.get_secret_value())
        self._auth: AuthorizeResult | None = None
        self._auth_lock = asyncio.Lock()

        async def authorize(**_: Any) -> AuthorizeResult:  # Bolt passes arguments by name; a plain function
            return await self._authorize()

        self.bolt = AsyncApp(signing_secret=cfg.signing_secret.get_secret_value(), authorize=authorize,
                             # Listeners only ack() and queue their work (`later`), so Bolt may run them
                             # inline: no task and no 10 ms ack-polling loop per request.
                             client=self.client, process_before_response=True, logger=log)
        self._handler = AsyncSlackRequestHandler(self.bolt)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.seen = SeenMarks(app.store, clock)
        self._jobs: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._socket: Any = None
        self.create_change = CreateChangeButton(app, self.notifier, self.flow, metrics, clock)
        self._register()

    # ---- HTTP endpoints -------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [Route(path, self.endpoint, methods=["POST"])
                for path in ("/slack/events", "/slack/interactivity", "/slack/commands")]

    async def endpoint(self, request: Request) -> Response:
        """Verify, refuse replays, drop retried events already handled, then hand over to Bolt.

        The body is not read (the server's guard caps it at server.max_body_bytes while it streams) unless the
        headers could belong to a signed request, and not parsed until its signature verifies.
        """
        ts = request.headers.get("x-slack-request-timestamp", "")
        sig = request.headers.get("x-slack-signature", "")
        kind = request.url.path.rsplit("/", 1)[-1]
        if not _plausible(ts, sig, self.clock()):
            self.metrics.chat_requests.labels(kind=kind, outcome="bad_signature").inc()
            return JSONResponse({"error": "invalid or expired Slack signature"}, status_code=401)
        body = await request.body()
        if not self.signatures.is_valid(body=body, timestamp=ts, signature=sig):
            self.metrics.chat_requests.labels(kind=kind, outcome="bad_signature").inc()
            return JSONResponse({"error": "invalid or expired Slack signature"}, status_code=401)
        event_id = _event_id(body)
        # Slack may retry an event within the same second (same body, same signature): a retry carries a new
        # X-Slack-Retry-Num, and the event id below makes it a no-op. Anything else seen before is a replay.
        retry = request.headers.get("x-slack-retry-num", "") if event_id else ""
        if not await self.seen.first(f"sig:{sig}:{retry}", REPLAY_WINDOW):
            self.metrics.chat_requests.labels(kind=kind, outcome="replayed").inc()
            return JSONResponse({"error": "this signed request was already received (replay)"}, status_code=401)
        if event_id and not await self.seen.first(f"event:{event_id}", SEEN_KEEP):
            self.metrics.chat_requests.labels(kind=kind, outcome="duplicate").inc()
            return JSONResponse({"ok": True, "duplicate": event_id})
        self.metrics.chat_requests.labels(kind=kind, outcome="accepted").inc()
        return await self._handler.handle(request)

    async def start_socket_mode(self) -> None:
        """Connect over Socket Mode (installs without a public URL) instead of HTTP endpoints."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        if self.cfg.app_token is None:
            raise ValueError("slack.app_token (xapp-...) is required for slack.socket_mode")
        self._socket = AsyncSocketModeHandler(self.bolt, self.cfg.app_token.get_secret_value())
        await self._socket.connect_async()

    async def start(self) -> None:
        """Load delivery marks, start the post-acknowledgement workers, resume interrupted change flows."""
        await self.seen.load()
        try:
            await self._authorize()
        except Exception as e:  # Slack unreachable at start: the first request tries again
            log.warning("Slack auth.test failed at start (%s); retrying on the first request", e)
        self._workers = [asyncio.create_task(self._work(), name=f"slack-{i}") for i in range(WORKERS)]
        await self.resume()

    async def _authorize(self) -> AuthorizeResult:
        """One bot identity (auth.test once, shared): a burst of first requests does not call Slack each."""
        async with self._auth_lock:
            if self._auth is None:
                resp = await self.client.auth_test()
                self._auth = AuthorizeResult.from_auth_test_response(
                    auth_test_response=resp, bot_token=self.cfg.bot_token.get_secret_value()
                    if self.cfg.bot_token else None)
            return self._auth

    def later(self, job: Callable[[], Awaitable[Any]]) -> None:
        """Run `job` after the acknowledgements already waiting: a burst is acknowledged first, worked after."""
        if not self._workers:  # not started through the server's lifespan (Socket Mode tests, scripts)
            self._workers = [asyncio.create_task(self._work(), name=f"slack-{i}") for i in range(WORKERS)]
        self._jobs.put_nowait(job)

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except Exception:
                log.exception("Slack job failed")
            finally:
                self._jobs.task_done()

    async def resume(self) -> None:
        """After a restart, continue in the background any change whose flow stopped part-way."""
        async def run() -> None:
            try:
                for st in await self.flow().resume_pending():
                    log.warning("resumed the flow of %s: %s", st.change.id, st.stage)
            except ValueError as e:
                log.info("no change flows resumed: %s", e)
            except Exception:
                log.exception("resuming change flows failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
        for t in [*self._tasks, *self._workers]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._workers, return_exceptions=True)
        await self.seen.close()
        self.create_change.close()

    def flow(self) -> ChangeFlow:
        """The change flow, built on first use (it needs the executor identity: ValueError without one)."""
        if self._flow is None:
            self._flow = self.app.flow(on_event=self.on_flow_event)
        return self._flow

    # ---- incidents ------------------------------------------------------------------------------
    async def on_incident(self, incident: Incident) -> None:
        """A webhook delivery changed an incident: show it at once (triage follows), or mark it resolved."""
        if incident.status == IncidentStatus.RESOLVED:
            await self.notifier.show_incident(incident.id, Stage.RESOLVED,
                                              ":large_green_circle: Alertmanager reports every alert resolved.")
            await self.post_incident_report(incident.id)
        elif incident.notifications == 1:
            await self.notifier.show_incident(incident.id)

    async def post_incident_report(self, incident_id: str) -> None:
        """Post the post-incident report in the incident's thread, once (recorded as a chat message, so a
        redelivered "resolved" or a restart does not post it twice; an alert that fires again after the
        resolution opens a new incident, which gets its own report)."""
        key = f"postmortem:{incident_id}"
        async with self.notifier.lock(key):
            await self._post_incident_report(incident_id, key)

    async def _post_incident_report(self, incident_id: str, key: str) -> None:
        if await asyncio.to_thread(self.app.store.chat_message, key) is not None:
            return
        report = await asyncio.to_thread(self.app.incident_report, incident_id)
        if report is None:
            return
        ts = await self.notifier.reply(incident_id, postmortem.slack_blocks(report))
        if ts is not None:
            top = await asyncio.to_thread(self.app.store.chat_message, f"incident:{incident_id}")
            await asyncio.to_thread(self.app.store.save_chat_message,
                                    ChatMessage(key, top.channel if top else self.cfg.channel, ts, None, "posted"))

    async def triage(self, incident: Incident) -> TriageReport:
        """The triage worker's job with Slack: message, triage, details in the thread, change requests."""
        await self.notifier.show_incident(incident.id)
        report = await self.app.triage(incident)
        link = trace_url(self.app.settings.tracing, trace_id=report.trace_id)
        await self.notifier.reply(incident.id, blocks.triage_details(report, link))
        changes = await self._propose(incident, report)
        pending = [c for c in changes if c.status == ChangeStatus.PENDING_APPROVAL]
        for c in changes:
            await self.notifier.show_change(c.id)
        await self.notifier.show_incident(incident.id, Stage.CHANGE_PROPOSED if pending else Stage.TRIAGED)
        return report

    async def _propose(self, incident: Incident, report: TriageReport) -> list[Any]:
        if not any(p.kind in EXECUTABLE and p.target is not None for p in report.proposals):
            return []
        try:
            flow = self.flow()
        except ValueError as e:
            await self.notifier.reply(incident.id, {"text": f":warning: No change requests proposed: {e}"})
            return []
        states = await self.app.propose_changes(report, flow)
        for st in states:
            self.metrics.changes.labels(status=st.change.status.value).inc()
        return [st.change for st in states]

    async def on_flow_event(self, ev: FlowEvent) -> None:
        """Progress of a change: its block, its incident's thread and top message follow."""
        icon = FLOW_ICON.get(ev.stage, ":information_source:")
        ch = await asyncio.to_thread(self.app.ledger.get, ev.change_id)
        if ev.stage in QUIET and ch is not None and ch.incident_id is None and await asyncio.to_thread(
                self.app.store.chat_message, f"change:{ev.change_id}") is None:
            return  # just proposed: the surface that asked posts its block where it was asked (a thread)
        message = ev.message.removeprefix(f"{ev.change_id}: ")
        if ev.stage in OUTCOMES and ch is not None and ch.result.get("verification") \
                and str(ch.result["verification"]) not in message:
            message = f"{message}; verification {ch.result['verification']}"
        text = f"{icon} `{ev.change_id}` *{ev.stage.replace('_', ' ')}*: {blocks.esc(message)}"
        await self.notifier.show_change(ev.change_id, outcome="" if ev.stage in QUIET else text)
        if ev.stage == ChangeStage.EXECUTING or ev.stage in OUTCOMES:
            self.metrics.executions.labels(stage=ev.stage).inc()
        if ch is None or ev.stage in QUIET:
            return
        if ch.incident_id is None:
            if ch.spec.action != ActionKind.DEPLOY:
                return  # the change block says it (a cost-report change in the report's thread)
            # A deployment: its progress (canary steps, promotion, abort) goes in the change block's thread.
            msg = await asyncio.to_thread(self.app.store.chat_message, f"change:{ev.change_id}")
            if msg is not None:
                t = ch.spec.target
                # Promote / Abort only while its canary runs: before the controller took up the template
                # there is nothing to abort yet, and after the end nothing to promote.
                body = blocks.rollout_progress(text, t.namespace or "", t.name) if ev.canary else {"text": text}
                await self.notifier.call("chat.postMessage", channel=msg.channel, thread_ts=msg.thread_ts or msg.ts,
                                         **body)
            return
        await self.notifier.reply(ch.incident_id, {"text": text})
        stage = FLOW_STAGE.get(ev.stage)
        if stage is not None:
            await self.notifier.show_incident(ch.incident_id, stage, text)

    # ---- Bolt listeners -------------------------------------------------------------------------
    def _register(self) -> None:
        bolt = self.bolt
        bolt.action(ACTION_APPROVE)(self._on_button)
        bolt.action(ACTION_REJECT)(self._on_button)
        bolt.action(CREATE_ACTION_ID)(self._on_create_change)
        bolt.action(blocks.ACTION_PROMOTE)(self._on_rollout_button)
        bolt.action(blocks.ACTION_ABORT)(self._on_rollout_button)
        bolt.command("/ops")(self._on_ops)
        bolt.event("app_mention")(self._on_mention)
        bolt.event("message")(self._on_message)

    async def _on_button(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any],
                         action: dict[str, Any]) -> None:
        await ack()
        self.later(lambda: self._click(body, action))

    async def _on_create_change(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any],
                                action: dict[str, Any]) -> None:
        await ack()
        self.later(lambda: self.create_change.click(body, action))

    async def _on_rollout_button(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any],
                                 action: dict[str, Any]) -> None:
        await ack()
        self.later(lambda: self._rollout_click(body, action))

    async def _rollout_click(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        kind = ActionKind.PROMOTE_ROLLOUT if action["action_id"] == blocks.ACTION_PROMOTE else ActionKind.ABORT_ROLLOUT
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", self.cfg.channel)
        message = body.get("message") or {}
        thread = str(message.get("thread_ts") or message.get("ts") or "")
        note = await self.rollout_change(kind, str(action.get("value", "")), user, None,
                                         thread=(channel, thread) if thread else None)
        await self.notifier.ephemeral(channel, user, note, thread or None)

    async def rollout_change(self, kind: ActionKind, target: str, user: str, reason: str | None, *,
                             thread: tuple[str, str] | None = None) -> str:
        """Propose promoting or aborting an Argo Rollout's canary, as `opsagent rollout promote|abort` does:
        a change request through policy and approval (the clicker alone cannot carry it out)."""
        try:
            ns, name = parse_target(target)
            flow = self.flow()
            spec = ChangeSpec(action=kind, cluster=self.app.settings.kubernetes.cluster,
                              target=ObjectRef(kind="Rollout", name=name, namespace=ns))
            st = await flow.propose(spec, reason=reason or f"{kind.value} asked in Slack by <@{user}>",
                                    requester=f"slack:{user}")
        except ExecutorUnavailable as e:
            return f":warning: No {kind.value.replace('_', ' ')} proposed for `{blocks.esc(target)}`: " \
                   f"{executor_down(e)}"
        except (ValueError, LookupError) as e:
            return f":warning: No {kind.value.replace('_', ' ')} proposed: {blocks.esc(str(e))}"
        ch = st.change
        self.metrics.changes.labels(status=ch.status.value).inc()
        await self.notifier.show_change(ch.id, thread=thread)
        if ch.status in (ChangeStatus.FAILED, ChangeStatus.DENIED):  # nothing to approve: say why, not who may
            return (f":warning: The {kind.value.replace('_', ' ')} of `{blocks.esc(target)}` cannot go ahead "
                    f"(`{ch.id}` {ch.status.value}): {blocks.esc(ch.policy_reason)}")
        return (f"Change request `{ch.id}` ({kind.value.replace('_', ' ')} `{blocks.esc(target)}`) is "
                f"{ch.status.value.replace('_', ' ')}: policy `{ch.policy_rule}`"
                + (f" needs {ch.approvals_required} approval(s) from {', '.join(ch.approver_roles)}."
                   if ch.approvals_required else f" — {blocks.esc(ch.policy_reason)}."))

    async def _click(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        decision = "approve" if action["action_id"] == ACTION_APPROVE else "reject"
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", self.cfg.channel)
        thread_ts = (body.get("message") or {}).get("thread_ts")
        note = await self._decide(str(action.get("value", "")), user, decision)
        if note:
            await self.notifier.ephemeral(channel, user, note, thread_ts)

    async def _decide(self, change_id: str, user: str, decision: str) -> str | None:
        """Run a decision; a private note for the person (why it was refused, or that another decision is
        already executing it), or None when the thread and the change block say it all."""
        try:
            # A decision on this change already running in this process (executing, verifying) is not
            # waited for: this one is recorded or refused (audited either way) and the thread left to it.
            state = await self.flow().decide(change_id, f"slack:{user}", decision, via="slack", wait=False)
            if state.stage == ChangeStage.DECIDED:
                self.metrics.approvals.labels(decision=decision, outcome="recorded", via="slack").inc()
                await self.notifier.show_change(change_id)
                return (f":information_source: Your {decision} of `{change_id}` was recorded "
                        f"({state.change.status.value}); an earlier decision is already carrying it forward — "
                        f"follow the thread.")
        except ExecutionRefused as e:
            self.metrics.approvals.labels(decision=decision, outcome="refused", via="slack").inc()
            return f":no_entry: Your {decision} of `{change_id}` was refused: {e}"
        except ExecutorUnavailable as e:
            log.warning("decision on %s by %s: %s", change_id, user, e)
            return f":warning: Your {decision} of `{change_id}` was not recorded: {executor_down(e)}"
        except Exception as e:
            log.exception("decision on %s by %s failed", change_id, user)
            return f":warning: Your {decision} of `{change_id}` could not be completed: {type(e).__name__}: {e}"
        self.metrics.approvals.labels(decision=decision, outcome="recorded", via="slack").inc()
        await self.notifier.show_change(state.change.id)
        return None

    async def _on_ops(self, ack: Callable[..., Awaitable[Any]], command: dict[str, Any],
                      respond: Callable[..., Awaitable[Any]]) -> None:
        await ack()
        self.later(lambda: self._ops(command, respond))

    async def _ops(self, command: dict[str, Any], respond: Callable[..., Awaitable[Any]]) -> None:
        words = str(command.get("text") or "").split()
        sub = words[0].lower() if words else "help"
        user = str(command.get("user_id", ""))
        store, ledger = self.app.store, self.app.ledger
        if sub == "status":
            firing = await asyncio.to_thread(store.incidents, IncidentStatus.FIRING, 20)
            pending = await asyncio.to_thread(ledger.list_changes, ChangeStatus.PENDING_APPROVAL, None, 20)
            text = blocks.status_text(firing, pending)
        elif sub == "incidents":
            text = blocks.incidents_text(await asyncio.to_thread(store.incidents, None, 20))
        elif sub == "changes":
            text = blocks.changes_text(await asyncio.to_thread(ledger.list_changes, None, None, 20))
        elif sub == "approve" and len(words) == 2:
            refusal = await self._decide(words[1], user, "approve")
            ch = await asyncio.to_thread(ledger.get, words[1])
            text = refusal or f":white_check_mark: Approved `{words[1]}`: now {ch.status.value if ch else '?'}."
        elif sub == "approve":
            text = "Usage: `/ops approve CHANGE_ID`"
        elif sub == "deploy":
            try:
                text = await self.deploy(parse_deploy(str(command.get("text") or "")), user)
            except ValueError as e:
                text = f":warning: {blocks.esc(str(e))}"
            except Exception as e:  # the person who asked hears what went wrong, never silence
                log.exception("/ops deploy by %s failed", user)
                text = f":warning: The deployment request failed: {type(e).__name__}: {blocks.esc(str(e))}"
        elif sub == "rollout" and len(words) >= 3 and words[1].lower() in ("promote", "abort"):
            kind = ActionKind.PROMOTE_ROLLOUT if words[1].lower() == "promote" else ActionKind.ABORT_ROLLOUT
            text = await self.rollout_change(kind, words[2], user, " ".join(words[3:]) or None)
        elif sub == "rollout":
            text = "Usage: `/ops rollout promote|abort NAMESPACE/NAME [why]`"
        elif sub == "rightsize":
            text = await self._rightsize(words[1] if len(words) > 1 else None)
        else:
            text = blocks.HELP if sub == "help" else f"Unknown command `{blocks.esc(sub)}`.\n{blocks.HELP}"
        await respond(text=text, response_type="ephemeral", replace_original=False)

    async def _rightsize(self, which: str | None) -> str:
        """Recommendations for a model, a Deployment (`NAME` or `NAMESPACE/NAME`), or the top savings."""
        try:
            result = await rightsize_run(self.app.settings, self.app.tools, self.app.audit, actor="agent:slack")
        except Exception as e:
            log.warning("/ops rightsize failed: %s", e)
            return f":warning: Right-sizing could not read the history: {blocks.esc(str(e))}"
        recs = result.recommendations
        if which is None:
            picked = sorted((r for r in recs if r.monthly_savings > 0), key=lambda r: -r.monthly_savings)[:5]
            head = f"*Top right-sizing savings over {result.window}* ({len(recs)} workloads analysed)"
        else:
            picked = [r for r in recs if which in (r.model, r.name, f"{r.namespace}/{r.name}")]
            head = f"*Right-sizing for `{blocks.esc(which)}` over {result.window}*"
            if not picked:
                known = sorted({r.model for r in recs})
                return (f"No workload serves or is named `{blocks.esc(which)}`. Models seen: "
                        + ", ".join(f"`{m}`" for m in known[:20]))
        if not picked:
            return f"{head}\nNothing to save: every workload is sized to its demand."
        return head + "\n" + "\n".join(f"• {blocks.esc(report.rec_line(r))}" for r in picked) + \
            "\nThe scheduled cost report carries a *Create change request* button for each of these."

    async def _on_mention(self, event: dict[str, Any]) -> None:
        self.later(lambda: self._question(event))

    async def _on_message(self, event: dict[str, Any]) -> None:
        text = str(event.get("text") or "")
        if event.get("bot_id") or event.get("subtype") or not event.get("thread_ts"):
            return
        if not text.lower().startswith(("opsagent", "@opsagent")):
            return  # people talk to each other in threads; the bot answers when addressed
        self.later(lambda: self._question(event))

    async def _question(self, event: dict[str, Any]) -> None:
        channel, ts = str(event.get("channel", "")), str(event.get("ts", ""))
        # app_mention and message events both arrive for one message that mentions the bot: answer once
        if not await self.seen.first(f"msg:{channel}:{ts}", SEEN_KEEP):
            return
        thread = str(event.get("thread_ts") or ts)
        user = str(event.get("user", ""))
        t0 = time.monotonic()
        owner = await asyncio.to_thread(self.app.store.chat_thread_owner, channel, thread)
        if owner is None:
            await self.notifier.call("chat.postMessage", channel=channel, thread_ts=thread,
                                     text="Ask me in an incident's thread; I answer with that incident's evidence.\n"
                                          + blocks.HELP)
            return
        incident_id = owner.split(":", 1)[1]
        incident = await asyncio.to_thread(self.app.store.incident, incident_id)
        if incident is None:
            return
        report = await asyncio.to_thread(self.app.store.latest_report, incident_id)
        recent = await asyncio.to_thread(self.app.ledger.list_changes, None, incident_id, 20)
        try:
            ans = await self.chat.answer(incident, report, str(event.get("text") or ""), user, recent)
            text = ans.text
            if ans.change is not None:
                text = await self._change_from_chat(incident, ans.change, ans.change_reason, user)
            elif ans.deploy is not None:
                text = await self.deploy(ans.deploy, user, thread=(channel, thread))
        except Exception as e:
            log.exception("answering in %s failed", incident_id)
            text = f":warning: I could not answer that: {type(e).__name__}: {e}"
        await self.notifier.call("chat.postMessage", channel=channel, thread_ts=thread, text=text)
        log.info("answered in %s in %.2fs", incident_id, time.monotonic() - t0)

    async def deploy(self, req: DeployRequest, user: str, *, thread: tuple[str, str] | None = None) -> str:
        """Preflight and propose a deployment asked for in Slack; the change block goes to `thread` (or the
        channel) with Approve / Reject, and its progress follows there."""
        try:
            out = await self.app.deploy(req, requester=f"user:{user}", via="slack", on_event=self.on_flow_event)
        except (LookupError, ValueError) as e:
            return f":warning: Nothing was proposed: {blocks.esc(str(e))}"
        except ExecutorUnavailable as e:
            log.warning("deployment of %s asked by %s: %s", req.target, user, e)
            return f":warning: Deployment of `{req.target}` not proposed: {executor_down(e)}"
        evidence = blocks.esc(out.plan.preflight.markdown().replace("**", "*"))
        if out.state is None:
            return (f":no_entry: Deployment of `{req.target}` refused at preflight ({blocks.esc(out.plan.summary)}); "
                    f"no change request was made:\n{evidence}")
        ch = out.state.change
        self.metrics.changes.labels(status=ch.status.value).inc()
        await self.notifier.show_change(ch.id, thread=thread)
        return (f"Change request `{ch.id}` for `{req.target}` ({blocks.esc(out.plan.summary)}) is "
                f"{ch.status.value.replace('_', ' ')}: policy `{ch.policy_rule}`"
                + (f" needs {ch.approvals_required} approval(s) from {', '.join(ch.approver_roles)}"
                   if ch.approvals_required else f" — {blocks.esc(ch.policy_reason)}")
                + f".\nPreflight:\n{evidence}")

    async def _change_from_chat(self, incident: Incident, spec: ChangeSpec, reason: str, user: str) -> str:
        try:
            flow = self.flow()
        except ValueError as e:
            return f"I can't propose changes here: {e}"
        async def count(proposed: ChangeRequest) -> None:
            self.metrics.changes.labels(status=proposed.status.value).inc()

        # Waits at the approval interrupt, like any other change.
        ch = (await flow.propose(spec, reason=reason, requester=f"slack:{user}", incident_id=incident.id,
                                 on_proposed=count)).change
        await self.notifier.show_change(ch.id)
        if ch.status == ChangeStatus.PENDING_APPROVAL:
            await self.notifier.show_incident(incident.id, Stage.CHANGE_PROPOSED)
            return (f"I don't change anything from chat. I opened change request `{ch.id}` ({spec.action.value} "
                    f"{spec.target}); policy `{ch.policy_rule}` needs {ch.approvals_required} approval(s) from "
                    f"{', '.join(ch.approver_roles)} — not from you, since you asked for it.")
        return f"Change request `{ch.id}` is {ch.status.value}: {blocks.esc(ch.policy_reason)}. Nothing was changed."


def _event_id(body: bytes) -> str | None:
    if not body.startswith(b"{"):
        return None  # interactivity and commands are form-encoded
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return str(doc["event_id"]) if isinstance(doc, dict) and doc.get("event_id") else None


def _plausible(ts: str, sig: str, now: dt.datetime) -> bool:
    """Headers a signed request could carry: a v0 signature and a timestamp within Slack's 5 minutes."""
    try:
        age = abs(now.timestamp() - int(ts))
    except ValueError:
        return False
    return sig.startswith("v0=") and len(sig) == 67 and age <= 300


def executor_down(e: ExecutorUnavailable) -> str:
    """What a Slack user is told when the executor process does not answer: nothing ran, what to do."""
    return (f"the executor is unavailable ({blocks.esc(str(e))}). Nothing was executed; once the platform team "
            "has it running again (`opsagent executor serve`), try again.")
