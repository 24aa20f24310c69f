"""The Grafana dashboards the chart ships: every panel's PromQL runs against the sandbox's Prometheus, parses
and returns data. The agent's own panels read an `opsagent serve` that the sandbox's Prometheus scrapes
(listed in its targets file) after it has triaged an alert; the fleet panels read the simulated fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.sandbox import components, monitoring
from tests.integration.conftest import webhook_auth
from tests.serving import free_port, stop_process

CHART = Path(__file__).parents[2] / "deploy" / "helm" / "opsagent"
DASHBOARDS = sorted((CHART / "files" / "dashboards").glob("*.json"))
FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"
# What Grafana substitutes before it sends a query: its interval macros and the dashboards' variables
# (at "All": the regex .*). The time range of the check: the last 10 minutes.
GRAFANA = {"$__rate_interval": "1m", "$__range": "10m", "$__interval": "15s", "$namespace": ".*", "$model": ".*"}


def _panels() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((path.stem, panel["title"], target["expr"]))
    return out


def _grafana(expr: str) -> str:
    for k in sorted(GRAFANA, key=len, reverse=True):
        expr = expr.replace(k, GRAFANA[k])
    return expr


@pytest.fixture(scope="module")
def scraped_agent(sandbox: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An `opsagent serve` on the sandbox, scraped by its Prometheus, that has triaged one alert."""
    port = free_port()
    state = tmp_path_factory.mktemp("serve")
    log = (state / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "agent.entry.cli", "serve", "--sandbox", "--sandbox-dir",
                             sandbox["dir"], "--state-dir", str(state), "--port", str(port)],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    targets = Path(sandbox["agent_targets"])
    before = targets.read_text()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"opsagent serve did not start: {(state / 'serve.log').read_text()[-2000:]}")
        monitoring.write_agent_targets(targets, [f"127.0.0.1:{port}"])
        assert httpx.post(f"{url}/alertmanager", content=FIXTURE.read_bytes(), headers=webhook_auth(sandbox),
                          timeout=10).status_code == 200
        prom = sandbox["endpoints"]["prometheus"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the triage done and scraped, twice (increase() needs two samples)
            r = httpx.get(f"{prom}/api/v1/query", params={"query": f'count_over_time(opsagent_triage_seconds_count'
                          f'{{instance="127.0.0.1:{port}"}}[1m]) >= 2 and opsagent_triage_seconds_count > 0'},
                          timeout=10).json()
            if r["data"]["result"]:
                break
            time.sleep(2)
        else:
            raise AssertionError("Prometheus never scraped a triage from opsagent serve")
        yield url
    finally:
        targets.write_text(before)
        stop_process(proc)
        log.close()


def test_the_chart_ships_both_dashboards_labelled_for_grafanas_sidecar(sandbox: dict[str, Any]) -> None:
    helm = components.ensure(components.default_cache_dir(), ("helm",)).helm
    r = subprocess.run([str(helm), "template", "t", str(CHART), "--namespace", "obs", "--kube-version",
                        components.K8S_VERSION, "--set", "auditCheckpoints.allowRewritable=true"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    maps = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "ConfigMap"
            and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {next(iter(m["data"])) for m in maps}
    assert shipped == {p.name for p in DASHBOARDS} == {"opsagent-agent.json", "opsagent-gpu-fleet.json"}
    for m in maps:
        body = json.loads(next(iter(m["data"].values())))
        assert body["panels"] and m["metadata"]["annotations"]["grafana_folder"] == "opsagent"


@pytest.mark.parametrize(("dashboard", "title", "expr"), _panels(), ids=[f"{d}:{t}" for d, t, _ in _panels()])
def test_every_panel_query_parses_and_returns_data(sandbox: dict[str, Any], scraped_agent: str, dashboard: str,
                                                   title: str, expr: str) -> None:
    r = httpx.get(f"{sandbox['endpoints']['prometheus']}/api/v1/query", params={"query": _grafana(expr)}, timeout=30)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{title}: {body.get('error')}"
    assert body["data"]["result"], f"{dashboard} / {title}: no data for {_grafana(expr)}"
