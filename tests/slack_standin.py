"""A local Slack Web API stand-in and a request signer: what tests need to drive the real Bolt app.

The stand-in is a real HTTP server on loopback: it answers Web API methods with Slack-shaped JSON,
records every call (method, arguments) and every `response_url` post, and can answer a method with
HTTP 429 + `Retry-After` or with `{"ok": false}` to exercise the client's retries and the bot's
error handling. Requests to the bot are signed exactly as Slack signs them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BOT_USER = "UBOT0001"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float
    status: int = 200


@dataclass
class SlackStandIn:
    calls: list[Call] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    base_url: str = ""

    # ---- scripting --------------------------------------------------------------------------------
    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        with self._lock:
            self.failures.setdefault(method, []).extend(
                [(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})] * times)

    def fail(self, method: str, error: str = "internal_error", times: int = 1) -> None:
        with self._lock:
            self.failures.setdefault(method, []).extend([(200, {"ok": False, "error": error}, {})] * times)

    # ---- reading what happened -------------------------------------------------------------------
    def of(self, method: str, ok_only: bool = True) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and (c.status == 200 or not ok_only)]

    def wait(self, pred: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = pred()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or pred}; calls: "
                             f"{[(c.method, str(c.args.get('text'))[:80]) for c in self.calls]}")

    def message_text(self, ts: str) -> str:
        """The latest text of a message: its post, then every update, as a user would see it now."""
        with self._lock:
            texts = [c.args for c in self.calls if c.status == 200 and c.method in ("chat.postMessage", "chat.update")
                     and c.args.get("_ts") == ts]
        return render(texts[-1]) if texts else ""

    # ---- the server ------------------------------------------------------------------------------
    def app(self) -> Starlette:
        async def api(request: Request) -> Response:
            method = request.path_params["method"]
            raw = await request.body()
            if request.headers.get("content-type", "").startswith("application/json"):
                args = json.loads(raw or b"{}")
            else:
                args = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
            with self._lock:
                queued = self.failures.get(method) or []
                failure = queued.pop(0) if queued else None
                call = Call(method, args, time.time(), failure[0] if failure else 200)
                self.calls.append(call)
                if failure is not None:
                    status, body, headers = failure
                    if status == 200:
                        call.status = 599  # answered, but refused: not a successful call
                    return JSONResponse(body, status_code=status, headers=headers)
                if method == "auth.test":
                    return JSONResponse({"ok": True, "user_id": BOT_USER, "bot_id": "B0001", "team_id": "T0001",
                                         "team": "test", "user": "opsagent", "url": "https://test.slack.invalid/"})
                if method == "chat.postMessage":
                    ts = f"{1700000000 + next(self._ts)}.000100"
                    args["_ts"] = ts
                    return JSONResponse({"ok": True, "channel": args.get("channel"), "ts": ts,
                                         "message": {"text": args.get("text"), "ts": ts}})
                if method == "chat.update":
                    args["_ts"] = args.get("ts")
                    return JSONResponse({"ok": True, "channel": args.get("channel"), "ts": args.get("ts")})
                if method == "chat.postEphemeral":
                    return JSONResponse({"ok": True, "message_ts": f"{time.time():.6f}"})
                return JSONResponse({"ok": True})

        async def response_url(request: Request) -> Response:
            with self._lock:
                self.responses.append({"key": request.path_params["key"], **json.loads(await request.body())})
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/api/{method}", api, methods=["POST"]),
                                 Route("/respond/{key}", response_url, methods=["POST"])])

# Slack users in policies/default.yaml's roles, and a kubeconfig whose apiserver is unreachable (unit tests).
ONCALL, PLATFORM = "U024BE7LH", "U0G9QF9C6"
UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


def render(args: dict[str, Any]) -> str:
    """What a person reads in a message: its blocks' text (buttons as [Label]), or its fallback text."""
    blocks = args.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if not blocks:
        return str(args.get("text", ""))
    out: list[str] = []
    for b in blocks:
        if b.get("text"):
            out.append(b["text"]["text"])
        for f in b.get("fields", []):
            out.append(f["text"])
        for e in b.get("elements", []):
            out.append(f"[{e['text']['text']}]" if e.get("type") == "button" else e.get("text", ""))
    return "\n".join(out)


def buttons(args: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["action_id"], e["value"]) for b in args.get("blocks") or [] if b.get("type") == "actions"
            for e in b["elements"]]


# ---- signing ------------------------------------------------------------------------------------------

def sign(secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    base = f"v0:{ts}:".encode() + body
    sig = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig}


@dataclass
class SlackClientSim:
    """Sends what Slack would send to the bot: signed events, block actions and slash commands."""

    bot_url: str
    secret: str
    standin: SlackStandIn
    _n: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def post(self, path: str, body: bytes, content_type: str, headers: dict[str, str] | None = None,
             ts: int | None = None) -> httpx.Response:
        h = {"Content-Type": content_type, **sign(self.secret, body, ts), **(headers or {})}
        return httpx.post(f"{self.bot_url}{path}", content=body, headers=h, timeout=30)

    def event(self, event: dict[str, Any], event_id: str | None = None, **kw: Any) -> httpx.Response:
        payload = {"token": "x", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
                   "event_id": event_id or f"Ev{next(self._n):08d}", "event_time": int(time.time()),
                   "authorizations": [{"team_id": "T0001", "user_id": BOT_USER, "is_bot": True}],
                   "event": event}
        return self.post("/slack/events", json.dumps(payload).encode(), "application/json", **kw)

    def click(self, user: str, action_id: str, value: str, channel: str, message_ts: str,
              thread_ts: str | None = None, **kw: Any) -> httpx.Response:
        n = next(self._n)
        payload = {"type": "block_actions", "team": {"id": "T0001"}, "user": {"id": user, "team_id": "T0001"},
                   "api_app_id": "A0001", "token": "x", "trigger_id": f"trig{n}",
                   "channel": {"id": channel}, "container": {"type": "message", "message_ts": message_ts,
                                                             "channel_id": channel},
                   "message": {"ts": message_ts, "thread_ts": thread_ts, "type": "message"},
                   "response_url": f"{self.standin.base_url}/respond/click{n}",
                   "actions": [{"action_id": action_id, "block_id": f"change:{value}", "value": value,
                                "type": "button", "action_ts": f"{time.time():.6f}"}]}
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return self.post("/slack/interactivity", body, "application/x-www-form-urlencoded", **kw)

    def command(self, user: str, text: str, channel: str = "C0INCIDENT", **kw: Any) -> httpx.Response:
        n = next(self._n)
        form = {"token": "x", "team_id": "T0001", "channel_id": channel, "user_id": user, "command": "/ops",
                "text": text, "api_app_id": "A0001", "trigger_id": f"trig{n}",
                "response_url": f"{self.standin.base_url}/respond/cmd{n}"}
        return self.post("/slack/commands", urllib.parse.urlencode(form).encode(),
                         "application/x-www-form-urlencoded", **kw)


def offline_settings(tmp_path: Path, api_url: str, secret: str, channel: str, **overrides: Any) -> Any:
    """Settings for a bot whose Prometheus and apiserver are unreachable and whose Slack is the stand-in at
    `api_url` (unit tests)."""
    from agent.config import load_settings

    (tmp_path / "kubeconfig").write_text(UNREACHABLE_KUBECONFIG)
    return load_settings(None, state_dir=str(tmp_path / "state"),
                         prometheus={"url": "http://127.0.0.1:1", "timeout_s": 2},
                         kubernetes={"executor_kubeconfig": str(tmp_path / "kubeconfig")},
                         slack={"enabled": True, "bot_token": "xoxb-unit", "signing_secret": secret,
                                "channel": channel, "api_url": f"{api_url}/api/"}, **overrides)
