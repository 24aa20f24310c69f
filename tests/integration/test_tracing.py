"""Traces in Jaeger: a triage run by the CLI with tracing on is read back from Jaeger's query API with the
spans a user would look for (the triage, each graph node, each tool call with its query and outcome),
tagged with the incident id the report names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.sandbox import components, jaeger

FIXTURE = Path(__file__).parents[1] / "fixtures" / "alertmanager_bad_rollout.json"


@pytest.fixture(scope="module")
def jaeger_ep(sandbox: dict[str, Any]) -> Iterator[jaeger.JaegerEndpoints]:
    binary = components.locate(components.default_cache_dir()).jaeger
    if not binary.exists():  # the component cache lacks it: build it, as the sandbox builds its parts
        components.ensure(components.default_cache_dir(), ("jaeger",))
    sup = sandbox["_sandbox"].sup
    ep = jaeger.start(sup, binary, sandbox["_sandbox"].s.port_base)
    yield ep
    assert jaeger.stop(sup), "Jaeger was not running at the end of the tests"


def _triage(sandbox: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    body = json.loads(FIXTURE.read_text())
    body["groupKey"] = f"trace-{uuid.uuid4().hex}"
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(body))
    r = subprocess.run([sys.executable, "-m", "agent.entry.cli", "triage", "--alert", str(alert), "--sandbox",
                        "--sandbox-dir", sandbox["dir"], "--state-dir", str(tmp_path / "state"), "--format", "json"],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def _spans(trace: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(s["operationName"], {t["key"]: t["value"] for t in s["tags"]}) for s in trace["spans"]]


def test_a_triage_is_one_trace_in_jaeger(sandbox: dict[str, Any], jaeger_ep: jaeger.JaegerEndpoints,
                                         tmp_path: Path) -> None:
    service = f"opsagent-test-{uuid.uuid4().hex[:6]}"
    report = _triage(sandbox, tmp_path, {"OPSAGENT_TRACING__ENABLED": "true", "OPSAGENT_TRACING__ENDPOINT":
                                         jaeger_ep.otlp_http, "OPSAGENT_TRACING__SERVICE_NAME": service})
    assert report["trace_id"], "with tracing on the report names its trace"
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline:  # the collector writes asynchronously
        found = jaeger.traces(jaeger_ep, service, {"incident.id": report["incident_id"]})
        time.sleep(0.5)
    assert len(found) == 1, f"one trace for the incident, found {len(found)}"
    trace = found[0]
    assert trace["traceID"] == report["trace_id"]
    spans = _spans(trace)
    names = [n for n, _ in spans]
    root = [tags for n, tags in spans if n == "triage"]
    assert len(root) == 1 and root[0]["incident.id"] == report["incident_id"]
    assert root[0]["triage.status"] == report["status"] and root[0]["triage.tool_calls"] == report["tool_calls"]
    for node in ("intake", "gather", "diagnose", "propose", "report"):
        assert names.count(f"node {node}") == 1, f"node {node} missing from {names}"
    tools = [tags for n, tags in spans if n.startswith("tool ")]
    # one span per guarded call: each piece of evidence, plus the lookups that resolve the alert's workload
    # (a query skipped for a parameter nobody revealed made no call, so it has no span)
    ran = [e for e in report["evidence"] if e["status"] != "skipped"]
    wanted = Counter(e["tool"] for e in ran)
    assert not wanted - Counter(t["tool.name"] for t in tools), f"evidence without its span: {wanted}"
    proms = [t for t in tools if t["tool.name"].startswith("prometheus_")]
    assert proms and all("tool.query" in t and t["tool.outcome"] == "ok" and t["tool.items"] >= 0 for t in proms)
    queries = {e["params"]["query"] for e in ran if e["tool"].startswith("prometheus_")}
    assert queries <= {t["tool.query"] for t in proms}, "each evidence query is visible on its span"
    # tool spans hang under the gather node, which hangs under the triage
    by_id = {s["spanID"]: s for s in trace["spans"]}
    gather = next(s for s in trace["spans"] if s["operationName"] == "node gather")
    parents = {by_id[s["references"][0]["spanID"]]["operationName"] for s in trace["spans"]
               if s["operationName"].startswith("tool ") and s["references"]}
    assert parents <= {"node gather", "node diagnose"} and gather["references"]


def test_tracing_off_sends_nothing(sandbox: dict[str, Any], jaeger_ep: jaeger.JaegerEndpoints,
                                   tmp_path: Path) -> None:
    service = f"opsagent-off-{uuid.uuid4().hex[:6]}"
    report = _triage(sandbox, tmp_path, {"OPSAGENT_TRACING__ENABLED": "false", "OPSAGENT_TRACING__ENDPOINT":
                                         jaeger_ep.otlp_http, "OPSAGENT_TRACING__SERVICE_NAME": service})
    assert report["trace_id"] is None
    time.sleep(2)
    assert jaeger.traces(jaeger_ep, service) == []


def test_the_chart_turns_tracing_on_with_its_egress(tmp_path: Path) -> None:
    import yaml

    helm = components.ensure(components.default_cache_dir(), ("helm",)).helm
    chart = Path(__file__).parents[2] / "deploy" / "helm" / "opsagent"

    def render(*sets: str) -> tuple[dict[str, Any], list[int]]:
        r = subprocess.run([str(helm), "template", "t", str(chart), "--kube-version", components.K8S_VERSION,
                            "--set", "auditCheckpoints.allowRewritable=true",  # env: prod, no Object Lock bucket
                            *(a for s in sets for a in ("--set", s))], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap"
                                     and "config.yaml" in d.get("data", {}))["data"]["config.yaml"])
        policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
        ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
        return config, ports

    config, ports = render()
    assert config["tracing"]["enabled"] is False and 4318 not in ports  # off by default, nothing opened
    config, ports = render("tracing.enabled=true", "tracing.endpoint=http://otel.obs.svc:4318",
                           "tracing.uiUrl=https://jaeger.example")
    assert config["tracing"] == {"enabled": True, "endpoint": "http://otel.obs.svc:4318", "service_name": "opsagent",
                                 "sample_ratio": 1, "ui_url": "https://jaeger.example"}
    assert ports.count(4318) == 1
    _, ports = render("tracing.enabled=true", "tracing.endpoint=https://otlp.example")
    assert ports.count(443) == 1  # already allowed: not listed twice
