"""The cost report in Slack: posted once per tick of `rightsize.schedule`, and its "Create change request" button.

`CostReportPoster` builds the report (`agent.rightsize.service.run`, the guarded read) and posts its
Block Kit to the report channel. Every poster on the same store — the replicas of `opsagent serve`
and the chart's CronJob (`opsagent report cost --post`) — claims the tick first with the schedule
lease (`agent.rightsize.schedule`, job `cost-report`), so each tick is posted once. A failed build or
post gives the tick back for the next check; serve logs and counts it and carries on.

`CreateChangeButton` handles a click on a report's button: the value is checked against what the
poster recorded for that message (`agent.rightsize.posts`), the recorded spec goes through
`ChangeFlow.propose` (dry run, policy) with the clicking user as requester, the change flow opens and
the change block, with Approve / Reject, goes in the report's thread. A recommendation becomes at
most one change request per posted report, however often its button is clicked. A GPU-class move is
planned at the click (`App.deploy`: the target and its pool are read now, the capacity preflight runs
on the new class) and proposed as a deployment of the same version; a failed preflight is refused
with its numbers, nothing is stored, and the button can be clicked again once the pool has room.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from agent.app import App
from agent.audit.events import AuditEvent, AuditKind, inputs_hash
from agent.change.deploy import DeployRefused, TargetNotFound
from agent.change.flow import ChangeFlow
from agent.change.models import ChangeRequest, ChangeStatus
from agent.entry.server import Metrics
from agent.entry.slack import blocks
from agent.entry.slack.incidents import SlackNotifier
from agent.policy.evaluate import capacity_drop_limit
from agent.rightsize import report
from agent.rightsize.changes import is_move, move_request, spec_from_button
from agent.rightsize.posts import ButtonForPost, ReportPosts
from agent.rightsize.schedule import CronSchedule, ScheduleLeases, run_if_due
from agent.rightsize.service import run as rightsize_run
from agent.storage.store import db_target

log = logging.getLogger(__name__)

JOB = "cost-report"  # the lease's job name: serve replicas and the CronJob share it
CLICK_CLAIM_S = 300.0  # a click's claim on a button while it proposes; a dead replica's claim frees after this


class CostReportPoster:
    """Builds and posts the cost report for the schedule's latest tick, once across every process on the store."""

    def __init__(self, app: App, client: AsyncWebClient, channel: str, schedule: CronSchedule, *,
                 metrics: Metrics | None = None) -> None:
        if not channel:
            raise ValueError("no Slack channel for the cost report: set rightsize.schedule_channel or slack.channel")
        self.app = app
        self.client = client
        self.channel = channel
        self.schedule = schedule
        self.metrics = metrics
        target = db_target(app.settings.store_url)
        self.leases = ScheduleLeases(target)
        self.posts = ReportPosts(target)
        self._task: asyncio.Task[None] | None = None

    async def post_due(self, now: dt.datetime) -> dt.datetime | None:
        """Post the latest tick's report if it is due and no other process has; the tick posted, or None.

        Raises whatever the build or the post raised (the tick is released for a retry first).
        """
        cfg = self.app.settings.rightsize
        tick = self.schedule.last_tick(now)
        buttons: list[ButtonForPost] = []
        fallback: list[str] = []

        async def build() -> list[dict[str, Any]]:
            result = await rightsize_run(self.app.settings, self.app.tools, self.app.audit, actor="agent:cost-report")
            limit = capacity_drop_limit(self.app.policy, "scale")
            buttons.extend(report.slack_buttons(result, top=cfg.top, max_capacity_drop=limit))
            fallback.append(f"GPU cost report — {result.cluster}: right-sizing could save "
                            f"{report.money(result.total_savings)}/month")
            return report.slack_blocks(result, top=cfg.top, max_capacity_drop=limit)

        async def post(message: list[dict[str, Any]]) -> None:
            try:
                resp = await self.client.chat_postMessage(channel=self.channel, blocks=message,
                                                          text=fallback[0] if fallback else "GPU cost report")
            except Exception:
                if self.metrics is not None:
                    self.metrics.chat_errors.labels(method="chat.postMessage").inc()
                raise
            channel, ts = str(resp.get("channel") or self.channel), str(resp["ts"])
            try:  # posted: from here on a failure must not give the tick back (that would post it twice)
                await asyncio.to_thread(self.posts.record, channel, ts, JOB, tick.isoformat(), buttons,
                                        dt.datetime.now(dt.UTC))
            except Exception:
                log.exception("the cost report for %s is posted (%s) but its buttons were not recorded; "
                              "clicks on them will be refused", tick.isoformat(), ts)
            log.warning("posted the cost report for %s to %s (ts %s, %d buttons)", tick.isoformat(), channel, ts,
                        len(buttons))

        return await run_if_due(JOB, self.schedule, self.leases, now, build, post, lease_s=cfg.schedule_lease_s)

    # ---- the loop in `opsagent serve` ----------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cost-report")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.leases.close()
        self.posts.close()

    async def _loop(self) -> None:
        every = self.app.settings.rightsize.schedule_check_s
        while True:
            try:
                if await self.post_due(dt.datetime.now(dt.UTC)) is not None and self.metrics is not None:
                    self.metrics.cost_reports.labels(outcome="posted").inc()
            except asyncio.CancelledError:
                raise
            except Exception:  # logged by run_if_due with the tick; never stops serve
                if self.metrics is not None:
                    self.metrics.cost_reports.labels(outcome="failed").inc()
            await asyncio.sleep(every)


class CreateChangeButton:
    """A click on a cost report's "Create change request" button → one change request in the report's thread."""

    def __init__(self, app: App, notifier: SlackNotifier, flow: Callable[[], ChangeFlow], metrics: Metrics,
                 clock: Callable[[], dt.datetime]) -> None:
        self.app = app
        self.notifier = notifier
        self.flow = flow
        self.metrics = metrics
        self.clock = clock
        self.posts = ReportPosts(db_target(app.settings.store_url))

    def close(self) -> None:
        self.posts.close()

    def _refuse(self, user: str, reason: str, value: str) -> None:
        self.app.audit.append(AuditEvent(at=self.clock(), kind=AuditKind.POLICY_DECISION, actor=f"user:{user}",
                                         action=f"propose from {report.CREATE_ACTION_ID}",
                                         inputs_hash=inputs_hash(value), decision="refused", reason=reason))

    async def click(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        user = str((body.get("user") or {}).get("id", ""))
        channel = str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", ""))
        ts = str((body.get("container") or {}).get("message_ts") or (body.get("message") or {}).get("ts", ""))
        note = await self._create(user, channel, ts, str(action.get("value", "")))
        await self.notifier.ephemeral(channel, user, note, ts or None)

    async def _create(self, user: str, channel: str, ts: str, value: str) -> str:
        """Create the change request; what to tell the person who clicked."""
        try:
            rec_id, _ = spec_from_button(value)
        except ValueError as e:
            await asyncio.to_thread(self._refuse, user, f"unreadable button value: {e}", value)
            return f":no_entry: That button's value could not be read ({blocks.esc(str(e))}); nothing was proposed."
        posted = await asyncio.to_thread(self.posts.get, channel, ts, rec_id)
        if posted is None:
            await asyncio.to_thread(self._refuse, user, f"no button for {rec_id} on message {channel}/{ts}", value)
            return (f":no_entry: `{blocks.esc(rec_id)}` is not a recommendation of a cost report I posted in this "
                    "message; nothing was proposed.")
        _, claimed = spec_from_button(value)
        if claimed.digest() != posted.spec.digest():
            await asyncio.to_thread(self._refuse, user, f"button value for {rec_id} does not match the posted "
                                    f"change ({claimed.digest()[:12]} != {posted.spec.digest()[:12]})", value)
            return (f":no_entry: That button does not carry the change I posted for `{rec_id}`; nothing was "
                    "proposed.")
        age_h = (self.clock() - posted.posted_at).total_seconds() / 3600
        max_h = self.app.settings.rightsize.button_max_age_h
        if age_h > max_h:
            await asyncio.to_thread(self._refuse, user, f"report is {age_h:.0f} h old (limit {max_h:g} h)", value)
            return (f":hourglass: This report is {age_h:.0f} hours old; its figures are stale. Use the latest report "
                    "or `opsagent rightsize --propose`.")
        won = await asyncio.to_thread(self.posts.claim, channel, ts, rec_id, user, self.clock(), CLICK_CLAIM_S)
        if not won:
            again = await asyncio.to_thread(self.posts.get, channel, ts, rec_id)
            if again is not None and again.change_id:
                return (f":information_source: This recommendation is already change request `{again.change_id}` "
                        f"(requested by <@{again.clicked_by}>); it is in this message's thread.")
            who = f"<@{again.clicked_by}>" if again is not None and again.clicked_by else "someone"
            return f":information_source: {who} is creating a change request for this recommendation right now."
        proposed: list[ChangeRequest] = []

        async def record(ch: ChangeRequest) -> None:
            proposed.append(ch)
            self.metrics.changes.labels(status=ch.status.value).inc()
            await asyncio.to_thread(self.posts.done, channel, ts, rec_id, ch.id)
            # The block goes in the report's thread first; the flow's progress then edits it there.
            await self.notifier.show_change(ch.id, thread=(channel, ts))

        try:
            if is_move(posted.spec):
                outcome = await self.app.deploy(move_request(posted.spec), requester=f"slack:{user}",
                                                via="cost report", why=posted.reason, evidence=[rec_id],
                                                on_proposed=record)
                if outcome.state is None:
                    await asyncio.to_thread(self.posts.release, channel, ts, rec_id)
                    reasons = "\n".join(f"• {blocks.esc(r)}" for r in outcome.plan.preflight.reasons())
                    return (f":no_entry: The move of `{posted.spec.target.namespace}/{posted.spec.target.name}` "
                            f"({blocks.esc(outcome.plan.summary)}) was refused at preflight; nothing was "
                            f"proposed:\n{reasons}")
                ch = outcome.state.change
            else:
                ch = (await self.flow().propose(posted.spec, reason=posted.reason, requester=f"slack:{user}",
                                                evidence=[rec_id], on_proposed=record)).change
        except Exception as e:
            if proposed:
                log.exception("opening the flow of %s failed", proposed[0].id)
                return (f":warning: Change request `{proposed[0].id}` was created but its flow did not start: "
                        f"{type(e).__name__}: {e}")
            await asyncio.to_thread(self.posts.release, channel, ts, rec_id)
            if is_move(posted.spec) and isinstance(e, TargetNotFound | DeployRefused | ValueError):
                await asyncio.to_thread(self._refuse, user, f"move {rec_id}: {e}", value)
                return f":no_entry: The move could not be planned: {blocks.esc(str(e))}; nothing was proposed."
            log.exception("creating a change request for %s (clicked by %s) failed", rec_id, user)
            return f":warning: The change request could not be created: {type(e).__name__}: {blocks.esc(str(e))}"
        if ch.status == ChangeStatus.PENDING_APPROVAL:
            return (f":memo: Opened change request `{ch.id}` ({ch.spec.action.value} {ch.spec.target}) in this "
                    f"message's thread; policy `{ch.policy_rule}` needs {ch.approvals_required} approval(s) from "
                    f"{', '.join(ch.approver_roles)} — not from you, since you asked for it.")
        return (f"Change request `{ch.id}` is {ch.status.value}: {blocks.esc(ch.policy_reason)}. "
                "See this message's thread.")
