"""Settings precedence: defaults < YAML file < OPSAGENT_* environment < explicit overrides (CLI flags)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "opsagent.yaml"
    path.write_text(text)
    return path


def test_prod_from_the_environment_with_the_audit_key_from_the_file_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSAGENT_ENV", "prod")
    # (prod also needs the webhook's credentials: issue 15's authenticated intake)
    s = load_settings(write(tmp_path, "audit:\n  key: a-real-signing-key-0123456789-k7Qx\n"
                                      "  allow_rewritable_checkpoints: true\n"
                                      "server:\n  auth_tokens: Zq8vR2mX5tK9wL3nB7cJ4hF6dS1aG0eY\n"))
    assert s.env == "prod"
    assert s.audit.key is not None and s.audit.key.get_secret_value() == "a-real-signing-key-0123456789-k7Qx"


def test_environment_beats_the_file_and_overrides_beat_both_field_by_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSAGENT_PROMETHEUS__URL", "http://from-env:9090")
    monkeypatch.setenv("OPSAGENT_STORE__URL", "postgresql://from-env/db")
    cfg = write(tmp_path, "prometheus:\n  url: http://from-file:9090\n  timeout_s: 30\n"
                          "store:\n  url: postgresql://from-file/db\nactor: from-file\n")
    s = load_settings(cfg, store={"url": "postgresql://from-flag/db"})
    assert str(s.prometheus.url).startswith("http://from-env:9090")
    assert s.prometheus.timeout_s == 30  # the file's other fields of that group survive
    assert s.store.url == "postgresql://from-flag/db"
    assert s.actor == "from-file"


def test_prod_without_a_key_anywhere_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSAGENT_ENV", "prod")
    with pytest.raises(ValueError, match=r"audit\.key must be set outside env: dev"):
        load_settings(write(tmp_path, "actor: x\n"))


@pytest.mark.parametrize("text", ["prometheus: [unclosed\n", "- a list\n"])
def test_a_malformed_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match="settings file"):
        load_settings(write(tmp_path, text))
