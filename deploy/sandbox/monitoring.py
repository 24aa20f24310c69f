"""Render the sandbox's Prometheus and Alertmanager configuration.

The alert rules are the shipped production rules (`deploy/prometheus/gpu-serving.rules.yaml`)
with every `for:` shortened, so an injected fault alerts in seconds rather than minutes; the rule
expressions themselves are untouched, so what fires here fires in production.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

RULES = Path(__file__).resolve().parents[1] / "prometheus" / "gpu-serving.rules.yaml"
SANDBOX_FOR = "15s"


def sandbox_rules(source: Path = RULES, for_: str = SANDBOX_FOR) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        group["interval"] = "5s"
        for rule in group["rules"]:
            if "alert" in rule and rule.get("for") not in (None, "0m", "0s"):
                rule["for"] = for_
    return doc


def prometheus_config(
    *, cluster: str, alertmanager: str, simulator: str, kube_state_metrics: str, rules_file: Path,
    agent_targets: Path | None = None, agent_token_file: Path | None = None,
) -> dict[str, Any]:
    """The sandbox's Prometheus; with `agent_targets`, it also scrapes every `opsagent serve` listed in
    that file (file_sd, re-read on change), for the agent's own metrics and dashboard — with
    `agent_token_file` as its Bearer token, since `/metrics` answers 401 without one."""
    agent_job: list[dict[str, Any]] = []
    if agent_targets:
        agent_job.append({"job_name": "opsagent", "file_sd_configs": [{"files": [str(agent_targets)],
                                                                       "refresh_interval": "5s"}]})
        if agent_token_file is not None:
            agent_job[0]["authorization"] = {"type": "Bearer", "credentials_file": str(agent_token_file)}
    return {
        "global": {
            "scrape_interval": "5s",
            "scrape_timeout": "4s",
            "evaluation_interval": "5s",
            "external_labels": {"cluster": cluster},
        },
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            # The simulator speaks for many exporters (vLLM, Triton, DCGM) and labels its series the
            # way their own scrape jobs would, so its labels win.
            {"job_name": "fleet-simulator", "honor_labels": True,
             "static_configs": [{"targets": [simulator]}]},
            {"job_name": "kube-state-metrics", "static_configs": [{"targets": [kube_state_metrics]}]},
            *agent_job,
        ],
    }


def alertmanager_config(webhook_url: str, token_file: Path | None = None) -> dict[str, Any]:
    """Route every alert to opsagent; with `token_file`, as a Bearer token (opsagent answers 401 without)."""
    hook: dict[str, Any] = {"url": webhook_url, "send_resolved": True, "max_alerts": 0}
    if token_file is not None:
        hook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
    return {
        "route": {
            "receiver": "opsagent",
            "group_by": ["alertname", "namespace", "workload", "model_name", "Hostname"],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "opsagent",
             "webhook_configs": [hook]},
        ],
    }


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_agent_targets(path: Path, targets: list[str]) -> Path:
    """List the `opsagent serve` processes (host:port) the sandbox's Prometheus scrapes; replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": targets, "labels": {"service": "opsagent"}}]))
    tmp.replace(path)
    return path
