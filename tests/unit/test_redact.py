from __future__ import annotations

import pytest

from agent.guard.redact import redact, redact_obj


@pytest.mark.parametrize(("text", "secret"), [
    ("export OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx1234", "sk-proj-abcdefghijklmnopqrstuvwx1234"),
    ("curl -H 'Authorization: Bearer abc.def-ghijklmnopqrst'", "abc.def-ghijklmnopqrst"),
    ("--hf-token hf_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef12", "hf_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef12"),
    ("postgres://opsagent:hunter2@db:5432/ops", "hunter2"),
    ("aws key AKIAABCDEFGHIJKLMNOP in env", "AKIAABCDEFGHIJKLMNOP"),
    ('{"password": "s3cr3t!"}', "s3cr3t!"),
    ("SLACK_BOT_TOKEN=xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
])
def test_secrets_are_removed(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "[REDACTED:" in out
    assert redact(out) == out, "redaction is idempotent"


def test_ordinary_text_is_untouched() -> None:
    text = "TTFT p95 rose from 0.42s to 3.9s after revision 4 (model-version 2025.07.0) on llm-prod"
    assert redact(text) == text


def test_nested_structures() -> None:
    doc = {"args": ["--api-key=abcdef123456", "--port=8000"], "n": 3}
    assert redact_obj(doc) == {"args": ["--api-key=[REDACTED:secret-value]", "--port=8000"], "n": 3}
