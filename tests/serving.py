"""Run an ASGI app under a real uvicorn server on 127.0.0.1 for a test (no in-process shortcuts)."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def ready(url: str) -> bool:
    """The server at `url` answers its readiness probe."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(cond: Any, timeout: float, message: Any, every: float = 0.2) -> Any:
    """Poll `cond` until it returns something truthy (returned); AssertionError with `message` (or its
    result, when callable) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(message() if callable(message) else message)


@dataclass
class Replica:
    """An `opsagent serve` process started by a test: its name, base URL, process and log file."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def post_chunked(url: str, path: str, total: int, headers: dict[str, str], chunk: int = 1 << 20) -> tuple[int, int]:
    """POST `total` bytes chunked over a raw socket; return (status, bytes sent before the answer came)."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    s.sendall(head.encode())
    s.settimeout(30)
    sent, answer = 0, b""
    payload = f"{chunk:x}\r\n".encode() + b"[" * chunk + b"\r\n"
    try:
        while sent < total:
            s.sendall(payload)
            sent += chunk
            if select.select([s], [], [], 0)[0]:  # the server answered before the body ended
                answer = s.recv(4096)
                break
        s.settimeout(10)
        answer = answer or s.recv(4096)
    except OSError:  # reset while sending: the server answered and closed
        s.settimeout(10)
        with contextlib.suppress(OSError):
            answer = answer or s.recv(4096)
    finally:
        s.close()
    assert answer, f"no answer after {sent >> 20} MiB"
    return int(answer.split(b" ", 2)[1]), sent
