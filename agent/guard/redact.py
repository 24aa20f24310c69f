"""Secret redaction before anything reaches a model, a log line or the store.

Patterns cover the credentials that show up in alert annotations, pod args and log lines of serving
stacks: bearer tokens, API keys (OpenAI, Anthropic, Hugging Face, Slack, AWS), private keys,
passwords in URLs and `key=value` pairs. Redaction is idempotent and keeps a short hint of what was
removed so a reader knows something was there.
"""

from __future__ import annotations

import re
from typing import Any

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private-key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("openai-key", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b")),
    ("hf-token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("github-token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b")),
    ("bearer", re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{12,}")),
    ("url-password", re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")),
    ("secret-value", re.compile(
        r"(?i)\b([\w-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)[\w-]*)([\"']?\s*[=:]\s*)"
        r"(?![*\[]REDACTED)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)")),
]


def redact(text: str) -> str:
    """Return `text` with credentials replaced by `[REDACTED:kind]`."""
    for kind, pattern in _PATTERNS:
        if kind == "secret-value":
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED:secret-value]", text)
        elif kind == "bearer":
            text = pattern.sub(lambda m: f"{m.group(1)} [REDACTED:bearer]", text)
        else:
            text = pattern.sub(f"[REDACTED:{kind}]", text)
    return text


def redact_obj(value: Any) -> Any:
    """Redact every string inside nested dicts/lists (keys kept)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value
