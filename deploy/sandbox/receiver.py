"""A minimal Alertmanager webhook receiver on loopback, for the demo and the tests.

It stands where `opsagent serve` will stand: it records every notification (arrival time and body)
so a caller can wait for a given alert. It is not the product's intake (that validates, dedupes and
persists); it exists so the sandbox can prove the alert path end to end on its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Notification:
    received_at: float  # time.time() on arrival
    body: dict[str, Any]

    def alerts(self, name: str | None = None, status: str = "firing") -> list[dict[str, Any]]:
        return [a for a in self.body.get("alerts", [])
                if a.get("status") == status and (name is None or a["labels"].get("alertname") == name)]


class WebhookReceiver:
    """Records Alertmanager webhook posts; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, path: str = "/alertmanager") -> None:
        self.path = path
        self.notifications: list[Notification] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._cond:
                    receiver.notifications.append(Notification(time.time(), body))
                    receiver._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="webhook-receiver")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, predicate: Callable[[Notification], bool], timeout: float, since: float = 0.0) -> Notification:
        """Block until a notification received after `since` satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for n in self.notifications:
                    if n.received_at >= since and predicate(n):
                        return n
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({a["labels"].get("alertname", "?")
                                   for n in self.notifications for a in n.body.get("alerts", [])})
                    raise TimeoutError(f"no matching Alertmanager notification within {timeout:.0f}s "
                                       f"(received {len(self.notifications)}; alert names seen: {seen})")
                self._cond.wait(timeout=min(left, 1.0))
