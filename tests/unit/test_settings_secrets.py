"""Outside `env: dev` the audit signing key must be a real secret: missing, placeholder or guessable keys
are refused before anything is signed with them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import Settings

TOKEN = "webhook-token-7c1e9a3b5d7f9e1c3a5b"
STRONG = "9f2c4e1a7b3d5f608e1c2a4b6d8f0e1a3c5e7f9b1d3f5a7c9e1b3d5f7a9c1e3b"


@pytest.mark.parametrize(("key", "why"), [
    (None, "must be set"),
    ("changeme", "placeholder"),
    ("short-but-not-placeholder", "at least 32"),
    ("a" * 64, "distinct"),
    ("abcdefghijklmnop" * 4, "pattern repeated"),
    ("0123456789ab" * 3, "pattern repeated"),
])
def test_a_weak_or_missing_audit_key_is_refused_in_prod(key: str | None, why: str) -> None:
    audit = {} if key is None else {"key": key}
    with pytest.raises(ValidationError, match=why):
        Settings.model_validate({"env": "prod", "audit": audit, "server": {"auth_tokens": TOKEN}})


@pytest.mark.parametrize(("server", "why"), [
    ({}, "must be set outside env: dev"),
    ({"auth_tokens": "changeme"}, "at least 24"),
    ({"auth_tokens": f"{TOKEN},short"}, "at least 24"),
    ({"basic_auth": "alertmanager:short"}, "at least 16"),
    ({"basic_auth": "no-colon-here-0123456789"}, "user:password"),
])
def test_prod_refuses_an_open_or_weakly_guarded_webhook(server: dict[str, str], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Settings.model_validate({"env": "prod", "audit": {"key": STRONG}, "server": server})


def test_a_strong_key_is_accepted_in_prod_and_dev_needs_none() -> None:
    s = Settings.model_validate({"env": "prod", "audit": {"key": STRONG},
                                 "server": {"auth_tokens": f"{TOKEN}, x{TOKEN}"}})
    assert s.audit.key is not None and s.server.credentials() == ([TOKEN, "x" + TOKEN], [])
    assert Settings.model_validate({"env": "dev"}).audit.key is None


def test_serve_against_the_sandbox_accepts_the_token_its_alertmanager_sends(tmp_path: Path) -> None:
    from agent.entry.commands.common import sandbox_overrides

    token = tmp_path / "webhook-token"
    token.write_text(TOKEN + "\n")
    status = {"endpoints": {"prometheus": "http://127.0.0.1:1", "cloudwatch": "http://127.0.0.1:2"},
              "kubeconfigs": {"reader": "r", "executor": "e"}, "webhook_token_file": str(token)}
    s = Settings.model_validate(sandbox_overrides(status))
    assert s.server.credentials() == ([TOKEN], [])
    token.unlink()  # a sandbox that never started its Alertmanager: nothing to accept, dev stays open
    assert Settings.model_validate(sandbox_overrides(status)).server.credentials() == ([], [])
