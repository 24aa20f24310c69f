"""aimock, a real OpenAI/Anthropic-protocol HTTP server with scripted replies, for the LLM reasoner's tests.

Test modules opt in with `pytest_plugins = ("tests.llm.aimock",)`. The server runs from
`tests/llm/node_modules` (`npm ci --prefix tests/llm`; `deploy/setup.sh` does it) on 127.0.0.1 and a free
port, loads every file in `tests/llm/fixtures/` (not with `--validate-on-load`: one fixture scripts a
malformed tool call on purpose), and runs in strict mode: a request no fixture matches
gets a 503, never a made-up answer. Each scenario scripts its own model name, so tests select their
requests from the shared journal by model. The process is tracked by its PID and stopped by it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import free_port, stop_process

HERE = Path(__file__).resolve().parent
CLI = HERE / "node_modules" / "@copilotkit" / "aimock" / "dist" / "cli.js"
FIXTURES = HERE / "fixtures"


@dataclass(frozen=True)
class Aimock:
    url: str  # base URL without /v1: http://127.0.0.1:PORT

    def journal(self, model: str) -> list[dict[str, Any]]:
        """The requests made for `model`, oldest first (bodies normalised to the chat-completions shape)."""
        entries = httpx.get(f"{self.url}/__aimock/journal", params={"limit": 1000}, timeout=5).json()
        picked = [e for e in entries if isinstance(e.get("body"), dict) and e["body"].get("model") == model]
        return sorted(picked, key=lambda e: e["timestamp"])

    def journal_text(self, model: str) -> str:
        return json.dumps(self.journal(model), ensure_ascii=False)



@pytest.fixture(scope="session")
def aimock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aimock]:
    node = shutil.which("node")
    if node is None or not CLI.exists():
        pytest.fail("aimock is not installed: run `npm ci --prefix tests/llm` (deploy/setup.sh does it)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("aimock") / "aimock.log"
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [node, str(CLI), "--host", "127.0.0.1", "--port", str(port), "--fixtures", str(FIXTURES), "--strict",
             "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"aimock exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"aimock did not become ready in 20 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        yield Aimock(url=url)
    finally:
        stop_process(proc)
