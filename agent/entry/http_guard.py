"""Authentication and body limits for every HTTP request, applied before a handler reads anything.

A pure ASGI middleware, so it costs one header lookup and one hash per request and never buffers:
- Alertmanager's `http_config` sends `Authorization: Bearer TOKEN` or `Basic base64(user:password)`;
  either is checked in constant time against every configured credential (several, so one can be
  rotated while the other still works). A request without a valid one gets 401 before its body is read.
- Slack's endpoints authenticate by their own signature (agent/entry/slack/app.py); the probes
  (`/healthz`, `/readyz`) stay open for the kubelet.
- A body larger than the limit gets 413: at once when Content-Length says so, otherwise as soon as the
  streamed chunks pass the limit — never after buffering it.

It must not parse bodies or know about incidents: handlers do that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

OPEN_PATHS = ("/healthz", "/readyz")
SELF_AUTHENTICATED = ("/slack/",)  # Slack signs each request; checked by the bot before parsing


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode()).digest()


@dataclass(frozen=True)
class HttpSecurity:
    """What the middleware enforces. Credentials are kept as digests: comparing digests in constant time
    reveals neither a credential's length nor how much of it matched."""

    bearer: tuple[bytes, ...] = ()
    basic: tuple[bytes, ...] = ()
    max_body_bytes: int = 1 << 20
    open_paths: tuple[str, ...] = OPEN_PATHS
    self_authenticated: tuple[str, ...] = SELF_AUTHENTICATED
    realm: str = field(default="opsagent")

    @classmethod
    def build(cls, tokens: Iterable[str] = (), basic: Iterable[str] = (),
              max_body_bytes: int = 1 << 20) -> HttpSecurity:
        """`tokens`: bearer tokens; `basic`: "user:password" pairs."""
        return cls(bearer=tuple(_digest(t) for t in tokens if t),
                   basic=tuple(_digest(b) for b in basic if b), max_body_bytes=max_body_bytes)

    @property
    def auth_on(self) -> bool:
        return bool(self.bearer or self.basic)

    def authenticated(self, header: bytes | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.decode("latin-1").partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer":
            candidates, presented = self.bearer, value
        elif scheme == "basic":
            try:
                presented = base64.b64decode(value, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            candidates = self.basic
        else:
            return False
        d = _digest(presented)
        ok = False
        for c in candidates:  # every candidate is compared, so timing does not tell which one matched
            ok |= hmac.compare_digest(d, c)
        return ok


class BodyTooLarge(Exception):
    pass


class HttpGuard:
    """The ASGI middleware enforcing an `HttpSecurity`."""

    def __init__(self, app: ASGIApp, security: HttpSecurity) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sec = self.security
        path: str = scope["path"]
        headers = dict(scope["headers"])
        needs_auth = sec.auth_on and path not in sec.open_paths and not path.startswith(sec.self_authenticated)
        if needs_auth and not sec.authenticated(headers.get(b"authorization")):
            await _reply(send, 401, "missing or invalid credentials (Bearer token or Basic auth)",
                         [(b"www-authenticate", f'Bearer realm="{sec.realm}", Basic realm="{sec.realm}"'.encode())])
            return
        length = headers.get(b"content-length")
        limit = sec.max_body_bytes
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                await _reply(send, 400, "Content-Length is not a number")
                return
            if too_big:
                await _reply(send, 413, f"body is {int(length)} bytes; the limit is {limit}")
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await _reply(send, 413, f"body is larger than the limit of {limit} bytes")


async def _reply(send: Send, status: int, error: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
