"""Benchmark the Slack bot's acknowledgement latency under a burst, while a triage is running.

Runs `opsagent serve` (webhook + Bolt endpoints) in its own process on loopback against a running
sandbox, with the local Web API stand-in for Slack. An alert from the sandbox's bad-rollout fixture starts a real
triage (Kubernetes and Prometheus evidence); while it runs, N signed interactive requests go out at
once: Approve clicks on a pending change by a user without the role (refused: policy check, audit,
ephemeral), `/ops status` commands and thread questions. Latency is measured per request from send
to the HTTP answer (Bolt's ack); Slack's limit is 3 s, the goal p99 ≤ 300 ms.

Run: uv run python tests/benchmarks/bench_slack.py --sandbox-dir DIR --port-base N [--requests 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import yaml

from agent.app import build_app
from agent.change.models import ChangeSpec
from agent.entry.commands.common import settings_for
from agent.models import ActionKind, ObjectRef
from deploy.sandbox.fleet import Fleet
from deploy.sandbox.sandbox import Sandbox, SandboxSettings
from tests.serving import free_port, serve, stop_process
from tests.slack_standin import SlackStandIn, render, sign

SECRET = "bench-signing-secret"
FIXTURES = Path(__file__).parents[1] / "fixtures"


def _requests(n: int, change_id: str, top_ts: str, api_url: str) -> list[tuple[str, bytes, str]]:
    out: list[tuple[str, bytes, str]] = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            payload = {"type": "block_actions", "team": {"id": "T1"}, "user": {"id": f"U0NOROLE{i:03d}"},
                       "api_app_id": "A1", "token": "x", "trigger_id": f"t{i}", "channel": {"id": "C0BENCH"},
                       "message": {"ts": top_ts, "thread_ts": top_ts}, "response_url": f"{api_url}/respond/{i}",
                       "actions": [{"action_id": "change_approve", "value": change_id, "block_id": "b",
                                    "type": "button", "action_ts": f"{time.time():.6f}"}]}
            out.append(("/slack/interactivity", urllib.parse.urlencode({"payload": json.dumps(payload)}).encode(),
                        "application/x-www-form-urlencoded"))
        elif kind == 1:
            form = {"team_id": "T1", "channel_id": "C0BENCH", "user_id": f"U{i:08d}", "command": "/ops",
                    "text": "status", "response_url": f"{api_url}/respond/{i}", "trigger_id": f"t{i}"}
            out.append(("/slack/commands", urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"))
        else:
            ev = {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": f"EvB{i:06d}",
                  "event_time": int(time.time()), "event": {"type": "app_mention", "user": "U024BE7LH",
                                                            "text": "<@UBOT0001> why?", "ts": f"{1800000000 + i}.1",
                                                            "thread_ts": top_ts, "channel": "C0BENCH"}}
            out.append(("/slack/events", json.dumps(ev).encode(), "application/json"))
    return out


async def _burst(url: str, reqs: list[tuple[str, bytes, str]]) -> list[tuple[str, int, float]]:
    limits = httpx.Limits(max_connections=len(reqs), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        async def one(path: str, body: bytes, ctype: str) -> tuple[str, int, float]:
            headers = {"Content-Type": ctype, **sign(SECRET, body)}
            t0 = time.perf_counter()
            if path == "/healthz":  # the floor: the same burst on an endpoint that does nothing
                r = await http.get(f"{url}{path}")
            else:
                r = await http.post(f"{url}{path}", content=body, headers=headers)
            return path, r.status_code, (time.perf_counter() - t0) * 1000

        return await asyncio.gather(*(one(*r) for r in reqs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox-dir", type=Path, required=True)
    ap.add_argument("--port-base", type=int, default=17000)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--triages", type=int, default=6, help="Alerts (incidents to triage) sent before each burst.")
    args = ap.parse_args()
    status = Sandbox(SandboxSettings(dir=args.sandbox_dir, port_base=args.port_base)).status()
    if status["state"] != "up":
        raise SystemExit(f"sandbox in {args.sandbox_dir} is {status['state']}")
    fleet = Fleet.load()
    w = fleet.workload(fleet.faults["bad-rollout"]["workload"])
    api = SlackStandIn()
    body: dict[str, Any] = json.loads((FIXTURES / "alertmanager_bad_rollout.json").read_text())
    all_ms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, serve(api.app()) as api_url:
        api.base_url = api_url
        state = Path(tmp) / "state"
        slack = {"enabled": True, "bot_token": "xoxb-bench", "signing_secret": SECRET, "channel": "C0BENCH",
                 "api_url": f"{api_url}/api/"}
        # A pending change for the clicks, in the state the server will open.
        app = build_app(settings_for(None, status, state_dir=str(state), slack=slack))
        spec = ChangeSpec(action=ActionKind.SCALE, cluster=app.settings.kubernetes.cluster,
                          target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                          params={"replicas": 3})
        ch = asyncio.run(app.executor().propose(spec, reason="benchmark", requester="agent:bench"))
        app.close()
        config = Path(tmp) / "opsagent.yaml"
        config.write_text(yaml.safe_dump({"slack": slack}))
        token = Path(status.get("webhook_token_file") or "/nonexistent")
        # `serve --sandbox` accepts the token the sandbox's Alertmanager sends; none before the sandbox wrote one.
        auth = {"Authorization": "Bearer " + token.read_text().strip()} if token.exists() else {}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # `opsagent serve` in its own process, as in production; the load comes from this one.
        proc = subprocess.Popen(["uv", "run", "opsagent", "serve", "--config", str(config), "--sandbox",
                                 "--sandbox-dir", str(args.sandbox_dir), "--state-dir", str(state),
                                 "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"serve did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
                time.sleep(0.2)
            for rnd in range(args.rounds):
                ids = []
                for k in range(args.triages):  # several incidents, so triage runs through the whole burst
                    body["groupKey"] = f"bench-slack-{rnd}-{k}-{time.time()}"
                    r = httpx.post(f"{url}/alertmanager", content=json.dumps(body).encode(), headers=auth,
                                   timeout=10)
                    ids.append(r.json()["incident"])
                top = api.wait(lambda first=ids[0]: [c for c in api.of("chat.postMessage")
                                                     if not c.args.get("thread_ts") and first in render(c.args)],
                               what="incident message")[0]
                queued = _gauge(url, "opsagent_triage_queue_depth", auth)
                reqs = _requests(args.requests, ch.id, top.args["_ts"], api_url)
                t0 = time.perf_counter()
                results = asyncio.run(_burst(url, reqs))
                wall = time.perf_counter() - t0
                ms = sorted(x[2] for x in results)
                all_ms += ms
                bad = [x for x in results if x[1] != 200]
                print(f"round {rnd + 1}: {len(results)} requests in {wall:.2f}s; triage queue at start {queued:.0f}, "
                      f"at end {_gauge(url, 'opsagent_triage_queue_depth', auth):.0f}; non-200: {len(bad)}; "
                      f"ack p50 {statistics.median(ms):.0f} ms, p99 {ms[int(0.99 * (len(ms) - 1))]:.0f} ms, "
                      f"max {ms[-1]:.0f} ms", flush=True)
                for path in sorted({x[0] for x in results}):
                    k_ms = sorted(x[2] for x in results if x[0] == path)
                    print(f"    {path:<22} n={len(k_ms):<3} p50 {statistics.median(k_ms):.0f} ms, "
                          f"max {k_ms[-1]:.0f} ms")
                floor = sorted(x[2] for x in asyncio.run(_burst(url, [("/healthz", b"", "")] * args.requests)))
                print(f"    floor: {args.requests} concurrent GET /healthz p50 {statistics.median(floor):.0f} ms, "
                      f"p99 {floor[int(0.99 * (len(floor) - 1))]:.0f} ms", flush=True)
                time.sleep(3)
            # Service time without queueing: the same kinds of request, one at a time.
            seq = _requests(30, ch.id, "1.0", api_url)
            one_by_one = sorted(x[2] for r in seq for x in asyncio.run(_burst(url, [r])))
            print(f"one at a time: n={len(one_by_one)} p50 {statistics.median(one_by_one):.1f} ms, "
                  f"max {one_by_one[-1]:.1f} ms", flush=True)
        finally:
            stop_process(proc)
    all_ms.sort()
    print(f"all rounds: n={len(all_ms)} ack p50 {statistics.median(all_ms):.0f} ms, "
          f"p99 {all_ms[int(0.99 * (len(all_ms) - 1))]:.0f} ms, max {all_ms[-1]:.0f} ms (goal p99 <= 300 ms)")


def _gauge(url: str, name: str, auth: dict[str, str]) -> float:
    for line in httpx.get(f"{url}/metrics", headers=auth, timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


if __name__ == "__main__":
    main()
