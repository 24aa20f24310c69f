"""The scheduled report posts once per tick, even with two processes sharing the state file."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.rightsize.schedule import CronSchedule, ScheduleLeases, run_if_due

UTC = dt.UTC

CHILD = textwrap.dedent("""
    import asyncio, datetime as dt, json, sys, time
    from agent.rightsize.schedule import CronSchedule, ScheduleLeases, run_if_due
    db, out, start, steps = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    leases = ScheduleLeases(db)
    sched = CronSchedule("*/5 * * * *")
    async def build():
        return [{"type": "section", "text": {"type": "mrkdwn", "text": "report"}}]
    def post(blocks):
        with open(out, "a") as f:
            f.write(json.dumps({"owner": leases.owner}) + "\\n")
    async def main():
        for k in range(steps):  # a simulated minute per step, both processes on the same clock
            now = dt.datetime.fromtimestamp(start + 60 * k, dt.UTC)
            tick = await run_if_due("cost-report", sched, leases, now, build, post)
            if tick:
                with open(out + ".ticks", "a") as f:
                    f.write(tick.isoformat() + "\\n")
            time.sleep(0.01)
    asyncio.run(main())
""")


def test_cron_ticks() -> None:
    s = CronSchedule("0 9 * * MON")
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday
    assert s.last_tick(now) == dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert s.next_tick(now) == dt.datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert s.last_tick(dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)) == dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a cron expression"):
        CronSchedule("every monday")


def test_two_processes_post_each_tick_exactly_once(tmp_path: Path) -> None:
    db, out = tmp_path / "state.db", tmp_path / "posts.jsonl"
    start = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC).timestamp()
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(out), str(start), "31"])
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    posts = [json.loads(line) for line in out.read_text().splitlines()]
    ticks = (tmp_path / "posts.jsonl.ticks").read_text().split()
    assert len(posts) == 7  # 09:00, 09:05, ... 09:30
    assert sorted(ticks) == sorted(set(ticks)) and len(ticks) == 7
    runs = ScheduleLeases(db).runs("cost-report")
    assert len(runs) == 7 and all(done for _, _, done in runs)


def test_failed_post_is_released_and_retried(tmp_path: Path) -> None:
    leases = ScheduleLeases(tmp_path / "s.db", owner="a")
    sched = CronSchedule("0 * * * *")
    now = dt.datetime(2026, 11, 23, 9, 10, tzinfo=UTC)
    posted: list[int] = []

    async def build() -> list[dict[str, object]]:
        return [{"type": "divider"}]

    def broken(blocks: object) -> None:
        raise ConnectionError("slack is down")

    with pytest.raises(ConnectionError):
        asyncio.run(run_if_due("r", sched, leases, now, build, broken))
    other = ScheduleLeases(tmp_path / "s.db", owner="b")
    tick = asyncio.run(run_if_due("r", sched, other, now, build, lambda b: posted.append(1)))
    assert tick == dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC) and posted == [1]
    assert asyncio.run(run_if_due("r", sched, leases, now, build, lambda b: posted.append(1))) is None
    # Too late: a tick more than an hour old is skipped, not posted at start-up.
    late = dt.datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
    assert asyncio.run(run_if_due("daily", CronSchedule("0 9 * * *"), leases, late, build,
                                  lambda b: posted.append(1))) is None
    assert posted == [1]
