"""`helm template` with env: prod (the chart's default) refuses to render unless audit checkpoints go to a sink
the pod cannot rewrite (S3 under Object Lock, which a bucket gets by default), or the operator says
`auditCheckpoints.allowRewritable=true`; what it renders is settings opsagent accepts in prod."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import load_settings
from deploy.sandbox import components

CHART = Path(__file__).parents[2] / "deploy" / "helm" / "opsagent"
KEY = "3f9a1c7e5b2d8f4a6c0e9b1d3f5a7c9e"
TOKEN = "webhook-token-from-the-secret-0123"


def template(*values: str) -> subprocess.CompletedProcess[str]:
    helm = components.locate(components.default_cache_dir()).helm
    if not helm.exists():
        pytest.fail(f"helm is not built at {helm}: run deploy/sandbox/build-components.sh")
    args = [a for v in values for a in ("--set", v)]
    return subprocess.run([str(helm), "template", "t", str(CHART), "--kube-version", "1.34.0", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def pod_settings(out: subprocess.CompletedProcess[str], tmp_path: Path) -> Any:
    """The settings the serve pod would load: the rendered file plus the secrets from its environment."""
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    f = tmp_path / "config.yaml"
    f.write_text(docs[("ConfigMap", "t-opsagent-config")]["data"]["config.yaml"])
    return load_settings(f, audit={"key": KEY}, server={"auth_tokens": TOKEN}, state_dir=str(tmp_path / "s"))


def test_prod_without_a_locked_checkpoint_bucket_does_not_render() -> None:
    for values in ([], ["auditCheckpoints.cloudwatchLogs.logGroup=/opsagent/cp", "auditCheckpoints.region=eu-west-1"],
                   ["auditCheckpoints.s3.bucket=opsagent-audit", "auditCheckpoints.region=eu-west-1",
                    "auditCheckpoints.s3.objectLock.retainDays=0"]):
        out = template(*values)
        assert out.returncode != 0, values
        assert "env: prod needs an audit checkpoint sink the pod cannot rewrite" in out.stderr, out.stderr
        assert "auditCheckpoints.allowRewritable=true" in out.stderr


def test_a_bucket_is_written_under_object_lock_by_default_and_opsagent_accepts_it(tmp_path: Path) -> None:
    s = pod_settings(template("auditCheckpoints.s3.bucket=opsagent-audit", "auditCheckpoints.region=eu-west-1"),
                     tmp_path)
    assert s.env == "prod" and s.audit.has_locked_sink
    assert (s.audit.checkpoint_s3_retain_days, s.audit.checkpoint_s3_lock_mode) == (365, "COMPLIANCE")
    assert not s.audit.allow_rewritable_checkpoints


def test_allow_rewritable_renders_and_reaches_opsagent_and_dev_needs_nothing(tmp_path: Path) -> None:
    s = pod_settings(template("auditCheckpoints.allowRewritable=true"), tmp_path)
    assert s.env == "prod" and s.audit.allow_rewritable_checkpoints and not s.audit.has_locked_sink
    dev = template("env=dev")
    assert dev.returncode == 0, dev.stderr
    assert "allow_rewritable_checkpoints" not in dev.stdout
