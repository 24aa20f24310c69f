"""`opsagent doctor` without the sandbox: the Slack check against the Web API stand-in (a good and a
refused token), an unreachable Prometheus and executor, the exit code CI gates on and `--format json`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from agent.entry.cli import app as cli
from agent.health import Check, Status, exit_code, run_checks
from tests.serving import free_port, serve
from tests.slack_standin import SlackStandIn, offline_settings


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_slack_token_good_and_refused(tmp_path: Path) -> None:
    api = SlackStandIn()
    with serve(api.app()) as url:
        settings = offline_settings(tmp_path, url, "s3cret-signing", "C0INCIDENT")
        good = _by_name(asyncio.run(run_checks(settings)))["slack"]
        assert good.status == Status.OK and "opsagent" in good.detail and "C0INCIDENT" in good.detail
        api.fail("auth.test", "invalid_auth")
        bad = _by_name(asyncio.run(run_checks(settings)))["slack"]
    assert bad.status == Status.FAIL and "invalid_auth" in bad.detail
    assert "Bot User OAuth Token" in bad.fix
    assert [c.method for c in api.calls].count("auth.test") == 2  # the token really was tried, twice


def test_unreachable_prometheus_and_apiserver_fail_with_the_fix(tmp_path: Path) -> None:
    api = SlackStandIn()
    with serve(api.app()) as url:
        settings = offline_settings(tmp_path, url, "s3cret-signing", "C0INCIDENT")
        checks = _by_name(asyncio.run(run_checks(settings)))
    prom = checks["prometheus"]
    assert prom.status == Status.FAIL and "cannot reach Prometheus at http://127.0.0.1:1" in prom.detail
    assert "prometheus.url" in prom.fix
    ex = checks["kubernetes executor"]
    assert ex.status == Status.FAIL and ex.fix  # the unreachable apiserver of offline_settings
    assert checks["store"].status == Status.OK and checks["audit"].status == Status.OK
    assert checks["cloudwatch"].status == Status.SKIP and checks["tracing"].status == Status.SKIP
    assert exit_code(list(checks.values())) == 1


def test_cli_exit_code_and_json(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    env = {"OPSAGENT_STATE_DIR": str(tmp_path / "state"), "OPSAGENT_PROMETHEUS__URL": f"http://127.0.0.1:{port}",
           "OPSAGENT_PROMETHEUS__TIMEOUT_S": "2"}
    r = CliRunner().invoke(cli, ["doctor", "--format", "json"], env=env)
    assert r.exit_code == 1, r.output
    body = json.loads(r.output)
    assert body["ok"] is False
    prom = next(c for c in body["checks"] if c["name"] == "prometheus")
    assert prom["status"] == "fail" and str(port) in prom["detail"] and "prometheus.url" in prom["fix"]
    text = CliRunner().invoke(cli, ["doctor"], env=env)
    assert text.exit_code == 1 and "fix: Prometheus at" in text.output and "failing: prometheus" in text.output
