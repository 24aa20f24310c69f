"""`opsagent serve` loads neither the sandbox nor the eval harness: the container image carries neither.

The CLI is built (every command and option defined, as `opsagent serve` does before it runs) in a fresh
interpreter, and the modules it loaded are listed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LOADED = """
import sys
import typer.main
import {module}
from agent.entry.cli import app
typer.main.get_command(app)
print("\\n".join(sorted(sys.modules)))
"""


def _loaded_after_importing(module: str) -> set[str]:
    run = subprocess.run([sys.executable, "-c", LOADED.format(module=module)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return set(run.stdout.split())


def _sandbox_or_evals(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "evals" or m.startswith("evals.")
                  or m == "deploy.sandbox" or m.startswith("deploy.sandbox."))


def test_serve_imports_neither_the_sandbox_nor_the_eval_harness() -> None:
    assert _sandbox_or_evals(_loaded_after_importing("agent.entry.commands.serve")) == []


def test_the_check_sees_a_sandbox_import() -> None:
    """Control: the demo imports the sandbox at module level, so the same check must see it there."""
    assert "deploy.sandbox.sandbox" in _sandbox_or_evals(_loaded_after_importing("agent.entry.demo"))
