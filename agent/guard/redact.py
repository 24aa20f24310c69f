"""Secret redaction where evidence and incidents are created, so nothing downstream sees a credential.

Incidents (alert labels and annotations) and evidence (tool results) are redacted when they are built,
so Slack blocks, `GET /incidents`, logs, the audit trail and the model all get the same redacted text.
The shapes are those of the credentials that show up in alert annotations, pod args, events and log
lines of serving stacks (the prefixes and lengths published by their issuers, as catalogued by secret
scanners such as gitleaks and detect-secrets), plus keyword rules (`password=…`, `--token X`, kubeconfig
`client-key-data`, docker `auth`). Redaction is idempotent and keeps a short hint of what was removed
so a reader knows something was there. It errs toward removing too much: a lost log fragment costs
less than a leaked key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable
from typing import Any

from agent.incidents import Notification

_B64 = r"[A-Za-z0-9+/]"
_KEYWORDS = (r"password|passwd|pwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
             r"|key[_-]?data|accountkey|credentials?|client[_-]?secret|auth[_-]?token|session[_-]?key")

# (kind, pattern); a pattern with a group named `v` redacts only that group, others the whole match.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private-key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----.*?-----END [A-Z ]*PRIVATE KEY"
                               r"(?: BLOCK)?-----", re.S)),
    ("age-key", re.compile(r"\bAGE-SECRET-KEY-1[0-9A-Z]{58}\b")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|A3T[A-Z0-9])[0-9A-Z]{16}\b")),
    ("openai-key", re.compile(r"\bsk-(?:proj-|ant-(?:api|admin)\d\d-|svcacct-|None-)?[A-Za-z0-9_-]{20,}")),
    ("stripe-key", re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b")),
    ("hf-token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("slack-token", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}")),
    ("slack-app-token", re.compile(r"\bxapp-\d-[A-Za-z0-9]+-\d+-[A-Za-z0-9]+")),
    ("slack-webhook", re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}")),
    ("discord-webhook", re.compile(r"discord(?:app)?\.com/api/webhooks/\d+/[A-Za-z0-9_-]{20,}")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("gitlab-token", re.compile(r"\b(?:glpat|glptt|gldt|glrt|glsoat|glcbt)-[A-Za-z0-9_-]{20,}"
                                r"|\bGR1348941[A-Za-z0-9_-]{20}")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("sendgrid-key", re.compile(r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}")),
    ("npm-token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("pypi-token", re.compile(r"\bpypi-AgE[A-Za-z0-9_-]{50,}")),
    ("twilio-key", re.compile(r"\bSK[0-9a-fA-F]{32}\b")),
    ("mailgun-key", re.compile(r"\bkey-[0-9a-z]{32}\b")),
    ("shopify-token", re.compile(r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b")),
    ("databricks-token", re.compile(r"\bdapi[a-f0-9]{32}(?:-\d)?\b")),
    ("vault-token", re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{24,}")),
    ("grafana-token", re.compile(r"\b(?:glc_[A-Za-z0-9+/]{32,}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})")),
    ("doppler-token", re.compile(r"\bdp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}\b")),
    ("linear-key", re.compile(r"\blin_api_[A-Za-z0-9]{40}\b")),
    ("postman-key", re.compile(r"\bPMAK-[a-f0-9]{24}-[a-f0-9]{34}\b")),
    ("newrelic-key", re.compile(r"\bNR(?:AK|AA|II)-[A-Z0-9]{27}\b")),
    ("telegram-token", re.compile(r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}\b")),
    ("digitalocean-token", re.compile(r"\bdo[opr]_v1_[a-f0-9]{64}\b")),
    ("pulumi-token", re.compile(r"\bpul-[a-f0-9]{40}\b")),
    ("terraform-token", re.compile(r"\b[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,}")),
    ("dynatrace-token", re.compile(r"\bdt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}\b")),
    ("square-token", re.compile(r"\bsq0(?:atp|csp)-[0-9A-Za-z_-]{22,43}")),
    ("heroku-key", re.compile(r"\bHRKU-[A-Za-z0-9_-]{30,}")),
    ("sentry-dsn", re.compile(r"(?<=://)[0-9a-f]{32}(?=@[\w.-]*sentry)")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("bearer", re.compile(r"(?i)\b(?:bearer|token)\s+(?P<v>[A-Za-z0-9._~+/=-]{12,})")),
    ("basic-auth", re.compile(rf"(?i)\bbasic\s+(?P<v>{_B64}{{8,}}={{0,2}})")),
    ("url-password", re.compile(r"(?<=://)[^/\s:@]*:(?P<v>[^/\s@]+)(?=@)")),
    ("docker-auth", re.compile(rf"(?i)\"auth\"\s*:\s*\"(?P<v>{_B64}{{8,}}={{0,2}})\"")),
    ("cli-secret", re.compile(rf"(?i)(?<![\w-])--?(?:[\w-]*(?:{_KEYWORDS}))\s+(?P<v>(?!\[REDACTED)(?!-)\S+)")),
    ("secret-value", re.compile(
        rf"(?i)\b[\w.-]*(?:{_KEYWORDS})[\w.-]*[\"']?\s*[=:]\s*(?P<v>(?!\[REDACTED)(?![\d.]+(?:[\s,;&]|$))(?:\"[^\"]+\"|'[^']+'|[^\s,;&\"'}}]+))")),
    # A container env entry: `name: DB_PASSWORD` then `value: ...` (inline or on the next line).
    ("env-value", re.compile(rf"(?i)\bname\"?:\s*[\"']?[\w.-]*(?:{_KEYWORDS})[\w.-]*[\"']?\s*,?\s*\"?value\"?:\s*"
                             rf"(?P<v>(?!\[REDACTED)(?:\"[^\"]+\"|'[^']+'|[^\s,}}]+))")),
    ("azure-sas", re.compile(r"[?&]sig=(?P<v>[A-Za-z0-9%+/=]{20,})")),
    # A bare 40-character key in AWS's alphabet with upper, lower and digits (git SHAs are lowercase hex).
    ("aws-secret-key", re.compile(r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]*[A-Z])(?=[A-Za-z0-9/+]*[a-z])"
                                  r"(?=[A-Za-z0-9/+]*[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")),
]


def _is_basic(value: str) -> bool:
    """Basic credentials decode to `user:password`; an English word after "basic" does not."""
    try:
        return ":" in base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False


def _replacer(kind: str) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        if "v" not in m.re.groupindex:
            return f"[REDACTED:{kind}]"
        if kind == "basic-auth" and not _is_basic(m.group("v")):
            return m.group(0)
        start, end = m.span("v")
        base = m.start()
        return m.group(0)[: start - base] + f"[REDACTED:{kind}]" + m.group(0)[end - base:]
    return sub


_SUBS = [(p, _replacer(k)) for k, p in _PATTERNS]


# Each rule runs only when one of its literal hints (lowercased) is in the text; one regex over all hints
# finds them. Most texts (label values, metric names, summaries) hold none, so redaction costs one scan.
_WORDS = ("pass", "pwd", "secret", "token", "key", "credential", "auth", "session")
_HINTS: dict[str, tuple[str, ...]] = {
    "private-key": ("private key",), "age-key": ("age-secret-key-1",),
    "aws-access-key": ("akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva", "a3t"),
    "openai-key": ("sk-",), "stripe-key": ("_live_", "_test_"), "hf-token": ("hf_",), "slack-token": ("xox",),
    "slack-app-token": ("xapp-",), "slack-webhook": ("hooks.slack.com",), "discord-webhook": ("discord",),
    "github-token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "gitlab-token": ("glpat-", "glptt-", "gldt-", "glrt-", "glsoat-", "glcbt-", "gr1348941"),
    "google-api-key": ("aiza",), "sendgrid-key": ("sg.",), "npm-token": ("npm_",), "pypi-token": ("pypi-",),
    "twilio-key": ("sk",), "mailgun-key": ("key-",), "shopify-token": ("shp",), "databricks-token": ("dapi",),
    "vault-token": ("hvs.", "hvb.", "hvr."), "grafana-token": ("glc_", "glsa_"), "doppler-token": ("dp.",),
    "linear-key": ("lin_api_",), "postman-key": ("pmak-",), "newrelic-key": ("nrak-", "nraa-", "nrii-"),
    "telegram-token": (":aa",), "digitalocean-token": ("_v1_",), "pulumi-token": ("pul-",),
    "terraform-token": (".atlasv1.",), "dynatrace-token": ("dt0c01.",), "square-token": ("sq0",),
    "heroku-key": ("hrku-",), "sentry-dsn": ("sentry",), "jwt": ("eyj",), "bearer": ("bearer", "token"),
    "basic-auth": ("basic",), "url-password": ("://",), "docker-auth": ("auth",), "cli-secret": _WORDS,
    "secret-value": _WORDS, "env-value": _WORDS, "azure-sas": ("sig=",),
    # "aws-secret-key" has no literal: it always runs (one cheap pass).
}
_ALL_HINTS = sorted({h for hs in _HINTS.values() for h in hs}, key=len, reverse=True)
_HINT_RE = re.compile("|".join(re.escape(h) for h in _ALL_HINTS))
_RULES = [(p, sub, _HINTS.get(k, ())) for (k, p), (_, sub) in zip(_PATTERNS, _SUBS, strict=True)]
_CACHED_CHARS = 256  # short strings repeat (namespaces, severities, pod names): remember their verdict


def redact(text: str) -> str:
    """Return `text` with credentials replaced by `[REDACTED:kind]`."""
    if len(text) < 8:
        return text
    if len(text) <= _CACHED_CHARS:
        return _redact_short(text)
    return _redact(text)


@functools.lru_cache(maxsize=8192)
def _redact_short(text: str) -> str:
    return _redact(text)


def _redact(text: str) -> str:
    found = set(_HINT_RE.findall(text.lower()))
    if found:  # a hint inside a longer one found in its place ("key" in "key-") counts too
        found = {h for h in _ALL_HINTS if any(h in f for f in found)}
    for pattern, sub, hints in _RULES:
        if hints and found.isdisjoint(hints):
            continue
        text = pattern.sub(sub, text)
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


def redact_notification(n: Notification) -> Notification:
    """Redact every label, annotation and URL of a freshly parsed notification, in place; return it.

    Entry points call this right after parsing, so the stored incident — and everything that reads it:
    Slack, `GET /incidents`, logs, the audit trail, the model — never holds the raw text.
    """
    def d(m: dict[str, str]) -> dict[str, str]:
        return {k: redact(v) for k, v in m.items()}

    for a in n.alerts:
        a.labels, a.annotations, a.generatorURL = d(a.labels), d(a.annotations), redact(a.generatorURL)
    n.groupLabels, n.commonLabels, n.commonAnnotations = d(n.groupLabels), d(n.commonLabels), d(n.commonAnnotations)
    n.externalURL = redact(n.externalURL)
    return n
