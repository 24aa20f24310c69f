"""At least 40 realistic secret shapes, as they appear in annotations, pod args, events and logs: each is
removed, redaction is idempotent, and ordinary operational text next to them survives. Shapes follow the
issuers' published formats as catalogued by gitleaks and detect-secrets; every value here is made up."""

from __future__ import annotations

import base64

import pytest

from agent.guard.redact import redact

A40 = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example secret key
HEX32, HEX64 = "0f" * 16, "a1" * 32
B64_43 = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLXBhcnQtaGVyZQ"
BASIC = base64.b64encode(b"alertmanager:Pa55w0rd-for-am").decode()
DOCKER = base64.b64encode(b"robot$ci:registry-pass-123").decode()

SHAPES: list[tuple[str, str]] = [
    (f"aws_secret_access_key = {A40}", A40),
    (f"export AWS_SECRET_ACCESS_KEY={A40}", A40),
    (f"creds {A40} leaked in a log line", A40),
    ("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("role session ASIAY34FZKBOKMUTVV7A expired", "ASIAY34FZKBOKMUTVV7A"),
    ("OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"),
    ("x-api-key: sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AA", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123"),
    ("HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("SLACK_BOT_TOKEN=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx"),
    ("user token xoxp-123456789012-123456789012-123456789012-" + HEX32, HEX32),
    ("socket mode with xapp-1-A0123456789-1234567890123-" + HEX64, HEX64),
    ("posting to https://hooks.slack.com/services/T01ABCDEF/B01ABCDEF/AbCdEfGhIjKlMnOpQrStUvWx",
     "AbCdEfGhIjKlMnOpQrStUvWx"),
    ("git clone https://ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789@github.com/acme/x",
     "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("GH_TOKEN=github_pat_11ABCDEFG0123456789_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxY",
     "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxY"),
    ("runner uses glpat-AbCdEfGhIjKlMnOpQrSt", "glpat-AbCdEfGhIjKlMnOpQrSt"),
    ("Authorization: Bearer " + JWT, JWT),
    ("serviceaccount token: " + JWT, JWT),
    ("curl -H 'Authorization: Basic " + BASIC + "' http://am:9093", BASIC),
    ("Authorization: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"),
    ("client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb3dJQkFBS0NBUUVB",
     "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb3dJQkFBS0NBUUVB"),
    ("    token: abcdef.0123456789abcdef", "abcdef.0123456789abcdef"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEA7"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\n-----END OPENSSH PRIVATE KEY-----",
     "b3BlbnNzaC1rZXktdjE"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGX\n-----END PGP PRIVATE KEY BLOCK-----", "lQOYBGX"),
    ("vllm serve --api-key s3cr3t-vllm-key --port 8000", "s3cr3t-vllm-key"),
    ("mysql --password Hunter2Hunter2 -h db", "Hunter2Hunter2"),
    ("psql --password=Hunter2Hunter2", "Hunter2Hunter2"),
    ('{"auths": {"registry.acme.io": {"auth": "' + DOCKER + '"}}}', DOCKER),
    ("DATABASE_URL=postgresql://opsagent:Tr0ub4dor@db:5432/ops", "Tr0ub4dor"),
    ("redis://:r3d1s-pass@cache:6379/0", "r3d1s-pass"),
    ("DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=" + A40 + "Zz9==;EndpointSuffix=core",
     A40),
    ("https://acme.blob.core.windows.net/c/x?sv=2021&sig=AbCdEfGhIjKlMnOpQrStUvWxYz%2B012345", "AbCdEfGhIjKlMnOp"),
    ("STRIPE_KEY=sk_live_51H8AbCdEfGhIjKlMnOpQrSt", "sk_live_51H8AbCdEfGhIjKlMnOpQrSt"),
    ("maps key AIzaSyA1bCdEfGhIjKlMnOpQrStUvWxYz012345", "AIzaSyA1bCdEfGhIjKlMnOpQrStUvWxYz012345"),
    ("SENDGRID=SG.AbCdEfGhIjKlMnOpQrStUv." + B64_43, B64_43),
    ("//registry.npmjs.org/:_authToken=npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
     "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("twine upload -p pypi-AgEIcHlwaS5vcmcCJGFiY2RlZjAxLTIzNDUtNjc4OS1hYmNkLWVmMDEyMzQ1Njc4OQ",
     "pypi-AgEIcHlwaS5vcmcCJGFiY2RlZjAx"),
    ("VAULT_TOKEN=hvs.CAESIAbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "hvs.CAESIAbCdEfGhIjKlMnOpQrStUvWxYz0123"),
    ("grafana sa glsa_AbCdEfGhIjKlMnOpQrStUvWxYz012345_0a1b2c3d", "glsa_AbCdEfGhIjKlMnOpQrStUvWxYz012345"),
    ("DATABRICKS_TOKEN=dapi" + HEX32, "dapi" + HEX32),
    ("twilio SK" + HEX32 + " in use", "SK" + HEX32),
    ("mailgun key-" + "3ax6xnjp29jd6fds4gc373sgvjxteol0", "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"),
    ("shopify shpat_" + HEX32, "shpat_" + HEX32),
    ("bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawE talks", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawE"),
    ("DO token dop_v1_" + HEX64, "dop_v1_" + HEX64),
    ("age key AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
     "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"),
    ("SENTRY_DSN=https://" + HEX32 + "@o12345.ingest.sentry.io/678", HEX32),
    ("DISCORD=https://discord.com/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrStUvWxYz_-0123456789",
     "AbCdEfGhIjKlMnOpQrStUvWxYz_-0123456789"),
    ("NEW_RELIC_API_KEY: NRAK-ABCDEFGHIJKLMNOPQRSTUVWXYZ0", "NRAK-ABCDEFGHIJKLMNOPQRSTUVWXYZ0"),
    ('env: [{name: CLIENT_SECRET, value: "c1i3nt-s3cr3t-value"}]', "c1i3nt-s3cr3t-value"),
    ("pulumi pul-" + "ab" * 20, "pul-" + "ab" * 20),
]


@pytest.mark.parametrize(("text", "secret"), SHAPES, ids=[f"{i:02d}" for i in range(len(SHAPES))])
def test_each_secret_shape_is_removed(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out, out
    assert "[REDACTED:" in out
    assert redact(out) == out, "redaction is idempotent"


def test_the_table_covers_at_least_40_shapes() -> None:
    assert len(SHAPES) >= 40


@pytest.mark.parametrize("text", [
    "TTFT p95 rose from 0.42s to 3.9s after revision 4 (model-version 2025.07.0) on llm-prod",
    "commit 3f8a9c2d1e4b5a6978c0d1e2f3a4b5c6d7e8f901 rolled out by argocd",
    "pod chat-primary-7d9f8c6b5-x2x9k OOMKilled: basic authentication is disabled for this endpoint",
    "node ip-10-0-130-10.ec2.internal reported XID 79 on GPU-1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718",
    "token budget exhausted: max_tokens=4096 exceeded by 12 requests",
])
def test_operational_text_survives(text: str) -> None:
    assert redact(text) == text
