"""`opsagent doctor`'s model-provider check, against aimock (the OpenAI/Anthropic protocol stand-in) and a
provider that refuses the key: a served model passes, an unknown model and a refused key fail with the fix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.health import Check, Status, run_checks
from tests.serving import free_port, serve
from tests.slack_standin import SlackStandIn, offline_settings

if TYPE_CHECKING:
    from tests.llm.aimock import Aimock

pytest_plugins = ("tests.llm.aimock",)
SERVED = "triage-down-500"  # one of the models tests/llm/fixtures script


def _model_check(tmp_path: Path, **llm: object) -> Check:
    with serve(SlackStandIn().app()) as slack_url:
        settings = offline_settings(tmp_path, slack_url, "s3cret-signing", "C0INCIDENT",
                                    llm={"api_key": "sk-test-not-a-secret", "timeout_s": 5, **llm})
        return next(c for c in asyncio.run(run_checks(settings)) if c.name == "model provider")


@pytest.fixture
def refusing_provider() -> Iterator[str]:
    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}},
                            status_code=401)

    with serve(Starlette(routes=[Route("/v1/models", models)])) as url:
        yield url


def test_a_served_model_passes(aimock: Aimock, tmp_path: Path) -> None:
    check = _model_check(tmp_path, provider="openai-compatible", model=SERVED, base_url=f"{aimock.url}/v1")
    assert check.status == Status.OK and SERVED in check.detail, check


def test_a_model_the_provider_does_not_serve_fails_naming_the_ones_it_does(aimock: Aimock, tmp_path: Path) -> None:
    check = _model_check(tmp_path, provider="openai-compatible", model="gpt-nonexistent",
                         base_url=f"{aimock.url}/v1")
    assert check.status == Status.FAIL and "gpt-nonexistent" in check.detail
    assert "llm.model" in check.fix and SERVED in check.fix


def test_a_refused_key_and_an_unreachable_provider_fail_with_their_fixes(refusing_provider: str,
                                                                          tmp_path: Path) -> None:
    refused = _model_check(tmp_path, provider="openai-compatible", model=SERVED, base_url=f"{refusing_provider}/v1")
    assert refused.status == Status.FAIL and "401" in refused.detail and "llm.api_key" in refused.fix
    gone = _model_check(tmp_path, provider="openai-compatible", model=SERVED,
                        base_url=f"http://127.0.0.1:{free_port()}/v1")
    assert gone.status == Status.FAIL and "cannot reach" in gone.detail and "llm.base_url" in gone.fix
