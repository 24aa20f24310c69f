"""`opsagent rightsize` and `opsagent report cost`: recommendations and the cost report."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.change.deploy import DeployRefused, TargetNotFound
from agent.entry.commands.common import (
    DEFAULT_SANDBOX_DIR,
    ConfigOpt,
    SandboxDirOpt,
    SandboxOpt,
    StateOpt,
    fail,
    open_app,
)
from agent.entry.commands.identity import cli_identity
from agent.policy.evaluate import capacity_drop_limit
from agent.rightsize import report
from agent.rightsize.changes import change_specs, is_move, move_request, reason_for
from agent.rightsize.service import RightsizeError, RightsizeRun, parse_window, run

report_app = typer.Typer(help="Reports: GPU cost and right-sizing.", no_args_is_help=True)

WindowOpt = Annotated[str, typer.Option("--window", help="History to read: 36h, 14d, 2w.")]
NamespaceOpt = Annotated[list[str] | None, typer.Option("--namespace", "-n", help="Only this namespace (repeat).")]


def _run(app: Any, window: str, namespaces: list[str] | None) -> RightsizeRun:
    try:
        parse_window(window)
    except ValueError as e:
        fail(str(e), 2)

    async def go() -> RightsizeRun:
        try:
            return await run(app.settings, app.tools, app.audit, window=window, namespaces=namespaces,
                             actor=f"user:{app.settings.actor}")
        finally:
            await app.aclose_clients()

    try:
        return asyncio.run(go())
    except RightsizeError as e:
        fail(f"cannot read the fleet's history: {e}")
    except ValueError as e:
        fail(str(e), 2)


def rightsize(
    window: WindowOpt = "14d",
    namespace: NamespaceOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="md or json.")] = "md",
    propose: Annotated[bool, typer.Option("--propose", help="Turn each recommendation into change requests "
                                                           "(policy and approvals apply).")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="With --propose: only these recommendation ids "
                                                                  "or namespace/name workloads.")] = None,
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """Recommend replicas, GPU type/count/MIG, CPU and memory per serving workload, with costs and SLO risk."""
    if fmt not in ("md", "json"):
        fail("--format must be md or json", 2)
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    try:
        result = _run(app, window, namespace)
        typer.echo(report.to_json(result) if fmt == "json" else report.to_markdown(result))
        if propose:
            _propose(app, result, set(only or []))
    finally:
        app.close()


def _propose(app: Any, result: RightsizeRun, only: set[str]) -> None:
    """Each recommendation's change specs become change requests whose flows wait for approval."""
    try:
        flow = app.flow()
    except ValueError as e:
        fail(str(e), 2)
    # The requester is who self-approval is judged against: outside dev it is who the cluster says runs this,
    # never a name from settings (settings.actor would let one person propose as another and approve it).
    requester = f"user:{app.settings.actor}"
    if app.settings.env != "dev":
        try:
            requester = cli_identity(app, None, None, "propose rightsize changes")
        except ValueError as e:
            fail(str(e), 4)
    work = []
    for rec in result.recommendations:
        if only and rec.id not in only and f"{rec.namespace}/{rec.name}" not in only:
            continue
        planned = change_specs(rec, app.settings.kubernetes.cluster,
                               max_capacity_drop=capacity_drop_limit(app.policy, "scale"))
        if planned.note and (planned.specs or only):
            typer.echo(f"{rec.namespace}/{rec.name}: {planned.note}", err=True)
        work += [(rec, spec) for spec in planned.specs]

    async def go() -> list[Any]:
        states = []
        try:
            for rec, spec in work:
                if not is_move(spec):
                    states.append(await flow.propose(spec, reason=reason_for(rec, spec),
                                                     requester=requester, evidence=[rec.id]))
                    continue
                # A GPU-class move: read the target and its new pool now, preflight, propose as a deployment.
                try:
                    outcome = await app.deploy(move_request(spec), requester=requester, via="rightsize --propose",
                                               why=reason_for(rec, spec), evidence=[rec.id])
                except (TargetNotFound, DeployRefused, ValueError) as e:
                    typer.echo(f"{rec.namespace}/{rec.name}: the move could not be planned: {e}", err=True)
                    continue
                if outcome.state is None:
                    typer.echo(f"{rec.namespace}/{rec.name}: move refused at preflight ({outcome.plan.summary}): "
                               + "; ".join(outcome.plan.preflight.reasons()), err=True)
                else:
                    states.append(outcome.state)
        finally:
            await app.aclose_clients()
        return states

    for st in asyncio.run(go()):
        ch = st.change
        delta = f"{ch.cost_delta_per_month:+,.0f} USD/month" if ch.cost_delta_per_month is not None else "n/a"
        typer.echo(f"proposed {ch.id}: {ch.spec.action.value} {ch.spec.target} {ch.spec.params} — {st.stage} "
                   f"({ch.policy_rule}: {ch.policy_reason}); cost change {delta}")
    if not work:
        typer.echo("no change requests proposed", err=True)


@report_app.command("cost")
def report_cost(
    window: WindowOpt = "14d",
    namespace: NamespaceOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="md, html, json or slack (Block Kit JSON).")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")]
        = None,
    post: Annotated[bool, typer.Option("--post", help="Post the Slack report (over rightsize.window) to "
                                                      "rightsize.schedule_channel or slack.channel, once per tick of "
                                                      "rightsize.schedule shared with `opsagent serve` replicas "
                                                      "(without a schedule: once a minute).")] = False,
    config: ConfigOpt = None,
    use_sandbox: SandboxOpt = False,
    sandbox_dir: SandboxDirOpt = DEFAULT_SANDBOX_DIR,
    state_dir: StateOpt = None,
) -> None:
    """GPU-hours and cost per model, team and namespace, idle and unallocated cost, and the savings found."""
    if fmt not in ("md", "html", "json", "slack"):
        fail("--format must be md, html, json or slack", 2)
    if post and output is not None:
        fail("--post posts the Slack report; run without --post to write a file with --output", 2)
    if post and (namespace or window != "14d"):
        fail("--post posts the report serve posts (the whole fleet over rightsize.window); drop --namespace and "
             "--window", 2)
    app = open_app(config, use_sandbox, sandbox_dir, state_dir)
    if post:
        try:
            _post(app)
        finally:
            app.close()
        return
    try:
        result = _run(app, window, namespace)
        if fmt == "html":
            from agent.rightsize.report_html import to_html

            text = to_html(result)
        elif fmt == "slack":
            import json

            text = json.dumps({"blocks": report.slack_blocks(result, top=app.settings.rightsize.top,
                                                             max_capacity_drop=capacity_drop_limit(app.policy,
                                                                                                   "scale"))},
                              indent=2)
        elif fmt == "json":
            text = report.to_json(result)
        else:
            text = report.to_markdown(result)
    finally:
        app.close()
    if output is None:
        typer.echo(text)
        return
    try:
        output.write_text(text)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror}")
    typer.echo(f"wrote {output} ({len(text):,} bytes)", err=True)


def _post(app: Any) -> None:
    """Post the Slack report for the schedule's latest tick, unless another process already did."""
    import datetime as dt

    from agent.entry.slack.app import web_client
    from agent.entry.slack.reports import JOB, CostReportPoster
    from agent.rightsize.schedule import CronSchedule

    s = app.settings
    if s.slack.bot_token is None:
        fail("--post needs slack.bot_token (OPSAGENT_SLACK__BOT_TOKEN): the bot token the report is posted with", 2)
    channel = s.rightsize.schedule_channel or s.slack.channel
    if not channel:
        fail("--post needs a channel: set rightsize.schedule_channel or slack.channel", 2)
    try:
        schedule = CronSchedule(s.rightsize.schedule or "* * * * *")
    except ValueError as e:
        fail(str(e), 2)
    now = dt.datetime.now(dt.UTC)
    tick = schedule.last_tick(now)
    if (now - tick).total_seconds() > 3600:
        fail(f"nothing posted: the latest tick of rightsize.schedule {s.rightsize.schedule!r} was "
             f"{tick.isoformat()}, more than an hour ago (run --post on that schedule, in UTC)")
    poster = CostReportPoster(app, web_client(s.slack), channel, schedule)

    async def go() -> dt.datetime | None:
        try:
            return await poster.post_due(now)
        finally:
            await app.aclose_clients()

    try:
        posted = asyncio.run(go())
        owners = [o for t, o, _ in poster.leases.runs(JOB) if t == tick.isoformat()]
    except RightsizeError as e:
        fail(f"nothing posted: cannot read the fleet's history: {e}")
    except Exception as e:
        fail(f"nothing posted to {channel}: {type(e).__name__}: {e} (the tick is released for a retry)")
    finally:
        poster.leases.close()
        poster.posts.close()
    if posted is not None:
        typer.echo(f"posted the cost report for {posted.isoformat()} to {channel}", err=True)
    else:
        typer.echo(f"the cost report for {tick.isoformat()} was already posted (or is being posted) by "
                   f"{owners[0] if owners else 'another process'}; nothing to do", err=True)
