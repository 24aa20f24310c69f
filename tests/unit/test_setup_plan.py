"""Set-up builds and installs everything the code later looks for, so a fresh machine never lacks a part.

Helm was required by `components.locate()` and never built by the build script: every green run had
found a binary left in the cache by hand, and both README commands failed on a new machine. These
tests derive what is required from the code (`components.Binaries`, the tests' own lookups) and
compare it with what `build-components.sh --plan` and `setup.sh --plan --assume-empty` say they
would produce on an empty machine.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

from deploy.sandbox import components

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "sandbox" / "build-components.sh"
SETUP = ROOT / "deploy" / "setup.sh"
VERSION_VARS = ("K8S_VERSION", "ETCD_VERSION", "KWOK_VERSION", "KSM_VERSION", "HELM_VERSION", "JAEGER_VERSION",
                "ROLLOUTS_VERSION")

# Commands the code runs from Debian packages outside components.Binaries, and who runs them.
OTHER_SYSTEM_COMMANDS = {
    "initdb": "tests/postgres.py starts throwaway Postgres clusters for the store tests",
    "chromium": "tests/unit/test_rightsize_html.py screenshots the HTML cost report",
}


def _env(cache: Path) -> dict[str, str]:
    # The scripts' own default versions are under test: drop any override from the caller's shell.
    env = {k: v for k, v in os.environ.items() if k not in VERSION_VARS}
    env["OPSAGENT_CACHE_DIR"] = str(cache)
    return env


def _run(argv: list[str], cache: Path) -> list[str]:
    r = subprocess.run(argv, env=_env(cache), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, f"{' '.join(argv)} failed ({r.returncode}): {r.stderr}"
    return r.stdout.splitlines()


def _build_plan(cache: Path) -> dict[str, tuple[str, list[Path]]]:
    """Component name -> (build|cached, the binary paths it leaves in the cache)."""
    plan = {}
    for line in _run(["bash", str(BUILD), "--plan"], cache):
        verb, name, _version, *paths = line.split()
        plan[name] = (verb, [Path(p) for p in paths])
    return plan


def _cache_fields(cache: Path) -> dict[str, Path]:
    """The Binaries fields the build script must produce: those located inside the cache."""
    bins = components.locate(cache)
    return {f.name: getattr(bins, f.name) for f in dataclasses.fields(bins)
            if getattr(bins, f.name).is_relative_to(cache)}


def test_the_build_script_builds_every_component_locate_requires(tmp_path: Path) -> None:
    required = _cache_fields(tmp_path)
    assert "helm" in required, "the chart tests run Helm from the cache"
    plan = _build_plan(tmp_path)
    planned = {p for _verb, paths in plan.values() for p in paths}
    missing = {name: str(path) for name, path in required.items() if path not in planned}
    assert not missing, f"build-components.sh would not build these (an empty cache stays without them): {missing}"
    stray = planned - set(required.values())
    assert not stray, f"build-components.sh builds binaries nothing locates (version drift?): {stray}"
    assert {verb for verb, _ in plan.values()} == {"build"}, f"an empty cache has nothing cached: {plan}"


def test_each_part_is_built_by_the_component_ensure_asks_for(tmp_path: Path) -> None:
    # ensure() builds missing parts by naming their component to the script: the names must agree.
    plan = _build_plan(tmp_path)
    for field, path in _cache_fields(tmp_path).items():
        name = components.build_component(field)
        assert name in plan and path in plan[name][1], f"{field}: the script's {name!r} does not build {path}"


def test_the_demos_setup_builds_everything_the_sandbox_runs(tmp_path: Path) -> None:
    plan = _run(["bash", str(SETUP), "--plan", "--assume-empty", "--for", "demo"], tmp_path)
    go = {line.split()[2] for line in plan if line.startswith("go ")}
    in_cache = _cache_fields(tmp_path)
    needed = {components.build_component(p) for p in components.SANDBOX_PARTS if p in in_cache}
    assert needed <= go, f"`make demo` would start the sandbox without {sorted(needed - go)}"
    assert "helm" not in go, "the demo does not wait for what only the chart tests use"
    assert "argo-rollouts" not in go, "the demo's sandbox runs without Argo Rollouts: it must not wait for its build"


def test_a_component_counts_as_cached_only_when_every_binary_is_there(tmp_path: Path) -> None:
    required = _cache_fields(tmp_path)
    for field in ("helm", "kube_apiserver", "kube_controller_manager", "kube_scheduler"):  # not kubectl
        required[field].parent.mkdir(parents=True, exist_ok=True)
        required[field].write_text("#!/bin/sh\n")
        required[field].chmod(0o755)
    plan = _build_plan(tmp_path)
    assert plan["helm"][0] == "cached"
    assert plan["kubernetes"][0] == "build", "kubectl is missing, so Kubernetes must be built again"
    assert plan["etcd"][0] == "build"


def test_setup_installs_every_system_command_the_project_runs(tmp_path: Path) -> None:
    plan = _run(["bash", str(SETUP), "--plan", "--assume-empty"], tmp_path)
    apt = {line.split()[3]: line.split()[1] for line in plan if line.startswith("apt ")}
    bins = components.locate(tmp_path)
    from_debian = {getattr(bins, f.name).name for f in dataclasses.fields(bins)
                   if not getattr(bins, f.name).is_relative_to(tmp_path) and f.name != "python"}
    assert from_debian >= {"prometheus", "promtool", "prometheus-alertmanager"}
    needed = from_debian | set(OTHER_SYSTEM_COMMANDS)
    assert needed <= set(apt), f"on an empty machine setup.sh installs nothing for {sorted(needed - set(apt))}"
    # And on an empty machine it installs uv, the locked environment, the npm stand-in and the Go parts.
    assert "pip install uv" in plan
    assert "uv sync --all-extras --frozen" in plan
    assert "npm ci tests/llm" in plan and (ROOT / "tests/llm/package-lock.json").exists()
    go = [line.split(maxsplit=1)[1] for line in plan if line.startswith("go ")]
    assert [g.split()[1] for g in go] == list(_build_plan(tmp_path / "other")), "setup builds every Go component"


def test_setup_only_skips_what_it_knows_how_to_install(tmp_path: Path) -> None:
    # On this machine some parts are present ("present X"); each must be one setup would install
    # on an empty machine, or a later machine without it would be left stuck.
    here = _run(["bash", str(SETUP), "--plan"], tmp_path)
    empty = _run(["bash", str(SETUP), "--plan", "--assume-empty"], tmp_path)
    skipped = {line.split()[1] for line in here if line.startswith("present ")}
    installable = {line.split()[3] for line in empty if line.startswith("apt ")} | {"uv", "tests/llm/node_modules"}
    assert skipped <= installable, f"setup.sh skips {sorted(skipped - installable)} but cannot install them"


def test_the_scripts_refuse_unknown_arguments(tmp_path: Path) -> None:
    for script in (BUILD, SETUP):
        r = subprocess.run(["bash", str(script), "--plna"], env=_env(tmp_path), capture_output=True, text=True,
                           timeout=30, cwd=ROOT)
        assert r.returncode == 2 and "unknown argument" in r.stderr, (script.name, r.stderr)
