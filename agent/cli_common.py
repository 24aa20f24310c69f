"""Settings for CLI commands: flags, the environment, a config file, or a running sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.config import Settings, load_settings


def sandbox_overrides(status: dict[str, Any]) -> dict[str, Any]:
    """Point every integration at a running sandbox (from `opsagent sandbox status --json`)."""
    ep = status["endpoints"]
    kc = status["kubeconfigs"]
    return {
        "prometheus": {"url": ep["prometheus"], "scrape_interval_s": 5},
        "cloudwatch": {"endpoint_url": ep["cloudwatch"], "region": "us-east-1",
                       "access_key_id": "sandbox", "secret_access_key": "sandbox"},
        "kubernetes": {"reader_kubeconfig": kc["reader"], "executor_kubeconfig": kc["executor"],
                       "cluster": status.get("cluster") or "sandbox",
                       "serving_namespaces": status.get("serving_namespaces") or []},
        # The sandbox scrapes every 5 s and its faults recover in seconds: verify on a shorter clock.
        "verification": {"window_s": 20, "baseline_s": 60, "step_s": 2.5, "rate_window_s": 15},
    }


def settings_for(config: Path | None, sandbox_status: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    merged: dict[str, Any] = {}
    if sandbox_status is not None:
        merged = sandbox_overrides(sandbox_status)
    for k, v in overrides.items():
        if v is not None:
            merged[k] = v
    return load_settings(config, **merged)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from e
    except ValueError as e:
        raise ValueError(f"{path} is not JSON: {e}") from e
