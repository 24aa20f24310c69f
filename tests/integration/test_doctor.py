"""`opsagent doctor` against the sandbox: the real apiserver's access reviews, Prometheus, Alertmanager's
routes and moto; then deliberately broken settings, each giving its fix."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from agent.config import Settings
from agent.entry.commands.common import settings_for
from agent.health import Check, Status, run_checks
from tests.serving import free_port


def _checks(settings: Settings) -> dict[str, Check]:
    return {c.name: c for c in asyncio.run(run_checks(settings))}


def test_the_sandbox_passes_every_configured_check(sandbox: dict[str, Any], tmp_path: Path) -> None:
    checks = _checks(settings_for(None, sandbox, state_dir=str(tmp_path / "state")))
    for name in ("prometheus", "alertmanager", "kubernetes reader", "kubernetes executor", "cloudwatch", "store",
                 "audit"):
        assert checks[name].status == Status.OK, f"{name}: {checks[name].detail} / {checks[name].fix}"
    assert "none of" in checks["kubernetes executor"].detail
    assert checks["slack"].status == Status.SKIP  # not configured in the sandbox


def test_broken_settings_give_the_right_fix(sandbox: dict[str, Any], tmp_path: Path) -> None:
    # A kubeconfig whose token the apiserver does not know: 401 → "refused the credentials".
    kc = yaml.safe_load(Path(sandbox["kubeconfigs"]["reader"]).read_text())
    kc["users"][0]["user"] = {"token": "not-a-real-token"}
    forged = tmp_path / "forged.kubeconfig"
    forged.write_text(yaml.safe_dump(kc))
    # The reader's identity used as the executor: it can patch nothing.
    settings = settings_for(None, sandbox, state_dir=str(tmp_path / "state"),
                            prometheus={"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2},
                            alertmanager={"url": sandbox["endpoints"]["alertmanager"],
                                          "webhook_url": "http://agent.example:8080/alertmanager"})
    settings = settings.model_copy(update={"kubernetes": settings.kubernetes.model_copy(update={
        "reader_kubeconfig": forged, "executor_kubeconfig": Path(sandbox["kubeconfigs"]["reader"])})})
    checks = _checks(settings)

    prom = checks["prometheus"]
    assert prom.status == Status.FAIL and "cannot reach Prometheus" in prom.detail and "prometheus.url" in prom.fix
    rd = checks["kubernetes reader"]
    assert rd.status == Status.FAIL and "refused the credentials" in rd.fix and "401" in rd.fix, rd
    ex = checks["kubernetes executor"]
    assert ex.status == Status.FAIL and "cannot patch deployments.apps in" in ex.detail, ex
    assert "grant patch deployments.apps" in ex.fix
    am = checks["alertmanager"]
    assert am.status == Status.FAIL and "http://agent.example:8080/alertmanager" in am.detail
    assert "webhook_configs" in am.fix


def test_an_executor_allowed_too_much_fails(sandbox: dict[str, Any], tmp_path: Path) -> None:
    # The admin identity can do everything the executor must not: doctor says which.
    settings = settings_for(None, sandbox, state_dir=str(tmp_path / "state"))
    settings = settings.model_copy(update={"kubernetes": settings.kubernetes.model_copy(update={
        "executor_kubeconfig": Path(sandbox["kubeconfigs"]["admin"])})})
    ex = _checks(settings)["kubernetes executor"]
    assert ex.status == Status.FAIL and "is allowed what it must not be" in ex.detail
    assert "get secrets" in ex.detail and "patch deployments.apps in kube-system" in ex.detail
    assert "remove" in ex.fix
