"""The import contracts (pyproject.toml) hold on the real tree and break when an import crosses a layer.

Each case copies the Python sources to a temporary directory, plants one import a reviewer should refuse,
and runs `lint-imports` on the copy (the copy comes first on PYTHONPATH, so it is the one analysed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "tools", "evals", "deploy")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> Path:
    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if (not n.endswith(".py") and not (Path(directory) / n).is_dir())
                or n in ("__pycache__", "node_modules")}

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "500"}  # one contract per line
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_real_tree_keeps_every_contract(tmp_path: Path) -> None:
    run = _lint(_copy_tree(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    # A lower layer importing an entry point (the example from issue 14).
    ("agent/rightsize/service.py", "import agent.entry.commands.serve", "the agent is layered"),
    # Triage and the change path are independent siblings.
    ("agent/triage/nodes/propose.py", "import agent.change.flow", "the agent is layered"),
    # Storage may not reach up into the audit log.
    ("agent/storage/store.py", "import agent.audit.log", "the agent is layered"),
    # The policy evaluator imports nothing else from the agent.
    ("agent/policy/evaluate.py", "import agent.models", "the agent is layered"),
    # Below the entry points, nothing imports the eval harness or the sandbox.
    ("agent/app.py", "import evals.runner", "only entry points import the eval harness or the sandbox"),
    ("agent/triage/graph.py", "import deploy.sandbox.sandbox", "only entry points import the eval harness"),
    ("agent/policy/model.py", "import tools.base", "the policy evaluator works on plain data"),
    ("tools/base.py", "import agent.models", "tools never import the agent"),
])
def test_an_import_across_a_layer_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    root = _copy_tree(tmp_path)
    _append(root / module, line)
    run = _lint(root)
    assert run.returncode != 0, run.stdout
    broken = [ln.strip() for ln in run.stdout.splitlines() if " BROKEN" in ln]
    assert any(ln.startswith(contract) for ln in broken), run.stdout


def test_a_module_without_a_layer_breaks_the_layers_contract(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    (root / "agent" / "helpers.py").write_text('"""A grab-bag nobody placed."""\n')
    run = _lint(root)
    assert run.returncode != 0, run.stdout
    assert "agent.helpers" in run.stdout + run.stderr
