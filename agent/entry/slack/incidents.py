"""An incident's life in Slack: one top message edited through its stages, details in its thread.

Where each message lives (channel, ts) is kept in the store, so a restarted process edits the same
messages. Messages are always rendered from the stored records (incident, latest report, change and
its approvals), so a failed Slack call loses nothing: the next update shows the current state.
Slack failures are logged and counted, never raised into the incident or change paths; rate limits
(HTTP 429) are retried by the client after `Retry-After`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from agent.change.ledger import Ledger
from agent.entry.server import Metrics
from agent.entry.slack import blocks
from agent.entry.slack.blocks import Message, Stage
from agent.storage.store import ChatMessage, Store

log = logging.getLogger(__name__)


class SlackNotifier:
    def __init__(self, client: AsyncWebClient, store: Store, ledger: Ledger, channel: str, metrics: Metrics) -> None:
        self.client = client
        self.store = store
        self.ledger = ledger
        self.channel = channel
        self.metrics = metrics
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def lock(self, key: str) -> asyncio.Lock:
        """The lock serializing work on one message key (`incident:ID`, `change:ID`, `postmortem:ID`)."""
        return self._lock(key)

    async def call(self, method: str, **kwargs: Any) -> dict[str, Any] | None:
        """Call a Web API method; None (logged, counted) if Slack refused it or could not be reached."""
        payload = {k: v for k, v in kwargs.items() if v is not None}
        try:
            resp = await self.client.api_call(method, json=payload)
            return dict(resp.data) if isinstance(resp.data, dict) else {}
        except (SlackApiError, SlackClientError, OSError, TimeoutError) as e:
            self.metrics.chat_errors.labels(method=method).inc()
            detail = e.response.get("error") if isinstance(e, SlackApiError) else f"{type(e).__name__}: {e}"
            log.warning("Slack %s failed (%s); the record is kept and the next update retries", method, detail)
            return None

    # ---- the top message ------------------------------------------------------------------------
    async def show_incident(self, incident_id: str, stage: Stage | None = None, note: str | None = None) -> \
            ChatMessage | None:
        """Post or edit the incident's top message at `stage` (default: the stage it shows now)."""
        key = f"incident:{incident_id}"
        async with self._lock(key):
            incident = await asyncio.to_thread(self.store.incident, incident_id)
            if incident is None:
                log.warning("no incident %s to show", incident_id)
                return None
            msg = await asyncio.to_thread(self.store.chat_message, key)
            current = Stage(msg.stage) if msg and msg.stage else Stage.TRIAGING
            if current == Stage.RESOLVED and stage not in (None, Stage.RESOLVED):
                stage = Stage.RESOLVED  # a late event never re-opens a resolved incident's message
            stage = stage or current
            report = await asyncio.to_thread(self.store.latest_report, incident_id)
            body = blocks.incident_message(incident, stage, report, note or "")
            if msg is None:
                resp = await self.call("chat.postMessage", channel=self.channel, **body)
                if resp is None:
                    return None
                msg = ChatMessage(key, str(resp.get("channel", self.channel)), str(resp["ts"]), None, stage.value)
            else:
                resp = await self.call("chat.update", channel=msg.channel, ts=msg.ts, **body)
                msg = ChatMessage(key, msg.channel, msg.ts, None, stage.value if resp is not None else msg.stage)
            await asyncio.to_thread(self.store.save_chat_message, msg)
            return msg

    async def reply(self, incident_id: str, body: Message) -> str | None:
        """Post in the incident's thread (posting the top message first if it is missing); the reply's ts."""
        msg = await asyncio.to_thread(self.store.chat_message, f"incident:{incident_id}")
        if msg is None:
            msg = await self.show_incident(incident_id)
            if msg is None:
                return None
        resp = await self.call("chat.postMessage", channel=msg.channel, thread_ts=msg.ts, **body)
        return str(resp["ts"]) if resp else None

    # ---- change requests ------------------------------------------------------------------------
    async def show_change(self, change_id: str, outcome: str = "", *,
                          thread: tuple[str, str] | None = None) -> ChatMessage | None:
        """Post or edit a change request's block: in its incident's thread when it has one, else in `thread`
        (channel, ts: the cost report a recommendation's change came from), else in the channel."""
        key = f"change:{change_id}"
        async with self._lock(key):
            ch = await asyncio.to_thread(self.ledger.get, change_id)
            if ch is None:
                return None
            approvals = await asyncio.to_thread(self.ledger.approvals, change_id)
            body = blocks.change_request(ch, approvals, dt.datetime.now(dt.UTC), outcome)
            msg = await asyncio.to_thread(self.store.chat_message, key)
            if msg is not None:
                resp = await self.call("chat.update", channel=msg.channel, ts=msg.ts, **body)
                return msg if resp is not None else None
            thread_ts: str | None = None
            channel = self.channel
            if ch.incident_id:
                top = await asyncio.to_thread(self.store.chat_message, f"incident:{ch.incident_id}")
                if top is None:
                    top = await self.show_incident(ch.incident_id)
                if top is not None:
                    thread_ts, channel = top.ts, top.channel
            elif thread is not None:
                channel, thread_ts = thread
            resp = await self.call("chat.postMessage", channel=channel, thread_ts=thread_ts, **body)
            if resp is None:
                return None
            msg = ChatMessage(key, str(resp.get("channel", channel)), str(resp["ts"]), thread_ts, ch.status.value)
            await asyncio.to_thread(self.store.save_chat_message, msg)
            return msg

    async def ephemeral(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> None:
        await self.call("chat.postEphemeral", channel=channel, user=user, text=text, thread_ts=thread_ts)
