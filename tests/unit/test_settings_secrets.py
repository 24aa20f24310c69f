"""Outside `env: dev` the audit signing key must be a real secret: missing, placeholder or guessable keys
are refused before anything is signed with them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from agent.config import Settings

TOKEN = "webhook-token-7c1e9a3b5d7f9e1c3a5b"
STRONG = "9f2c4e1a7b3d5f608e1c2a4b6d8f0e1a3c5e7f9b1d3f5a7c9e1b3d5f7a9c1e3b"
LOCKED = {"checkpoint_s3_bucket": "opsagent-audit", "checkpoint_s3_retain_days": 400, "checkpoint_region": "eu-west-1"}
SLACK_SECRET = "8f14e45fceea167a5a36dedd4bea2543"  # the shape Slack issues: 32 hex characters


def prod(**groups: dict[str, object]) -> Settings:
    """Prod settings that pass every other check, with `groups` merged over them."""
    doc: dict[str, dict[str, object]] = {"audit": {"key": STRONG, **LOCKED}, "server": {"auth_tokens": TOKEN}}
    for name, fields in groups.items():
        doc[name] = {**doc.get(name, {}), **fields}
    return Settings.model_validate({"env": "prod", **doc})


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
    ({"auth_tokens": "0123456789ab" * 2}, "pattern repeated"),
    ({"auth_tokens": "aaaabbbbccccddddaaaabbbbcccc"}, "distinct"),
    ({"basic_auth": "alertmanager:" + "abcdefgh" * 2}, "pattern repeated"),
    ({"basic_auth": "alertmanager:short"}, "at least 16"),
    ({"basic_auth": "no-colon-here-0123456789"}, "user:password"),
])
def test_prod_refuses_an_open_or_weakly_guarded_webhook(server: dict[str, str], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Settings.model_validate({"env": "prod", "audit": {"key": STRONG}, "server": server})


def test_a_strong_key_is_accepted_in_prod_and_dev_needs_none() -> None:
    s = Settings.model_validate({"env": "prod", "audit": {"key": STRONG, **LOCKED},
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


@pytest.mark.parametrize(("slack", "why"), [
    ({"enabled": True}, "slack.signing_secret must be set"),
    ({"enabled": True, "signing_secret": "integration-signing-secret"}, "slack.signing_secret is too weak"),
    ({"enabled": True, "signing_secret": "0123456789abcdef" * 2}, "pattern repeated"),
    ({"enabled": True, "signing_secret": "changeme"}, "slack.signing_secret is a placeholder"),
])
def test_prod_refuses_a_missing_or_weak_slack_signing_secret_naming_the_setting(
        slack: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        prod(slack=slack)
    assert prod(slack={"enabled": True, "signing_secret": SLACK_SECRET}).slack.enabled
    assert prod(slack={"enabled": True, "socket_mode": True, "app_token": "xapp-1-A0-" + SLACK_SECRET}).slack.enabled
    Settings.model_validate({"env": "dev", "slack": {"enabled": True, "signing_secret": "dev-secret"}})


@pytest.mark.parametrize("audit", [
    {"checkpoint_s3_bucket": None, "checkpoint_s3_retain_days": None},  # the file sink only
    {"checkpoint_s3_retain_days": None},  # S3 without Object Lock: the pod's credentials can overwrite it
    {"checkpoint_s3_bucket": None, "checkpoint_log_group": "/opsagent/cp"},  # CloudWatch Logs only
])
def test_prod_refuses_to_start_with_only_checkpoint_sinks_the_pod_can_rewrite(audit: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="a sink the agent's pod cannot rewrite") as e:
        prod(audit=audit)
    assert "audit.allow_rewritable_checkpoints" in str(e.value), "the error names the override"
    assert prod(audit={**audit, "allow_rewritable_checkpoints": True}).audit.allow_rewritable_checkpoints
    assert prod().audit.has_locked_sink
    assert not Settings.model_validate({"env": "dev"}).audit.has_locked_sink  # dev: no sink required


def test_opsagent_serve_in_prod_without_a_locked_checkpoint_sink_refuses_to_start(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.entry.cli import app as cli

    config = tmp_path / "prod.yaml"
    config.write_text(yaml.safe_dump({"env": "prod", "state_dir": str(tmp_path / "state"),
                                      "audit": {"key": STRONG}, "server": {"auth_tokens": TOKEN, "port": 1}}))
    out = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert out.exit_code == 2 and "cannot rewrite" in out.output and "audit.checkpoint_s3_bucket" in out.output
    assert not (tmp_path / "state" / "audit.db").exists(), "refused before anything was opened"
