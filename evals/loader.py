"""Load scenario files from any directory, with errors that name the file and the field."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import ValidationError

from evals.schema import Scenario

SUITE = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """One or more scenario files are invalid; the message lists every problem as `file: field: why`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid scenarios:\n  " + "\n  ".join(problems))
        self.problems = problems


def load_file(path: Path) -> Scenario:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ScenarioError([f"{path}: cannot read: {e.strerror}"]) from e
    except yaml.YAMLError as e:
        raise ScenarioError([f"{path}: not YAML: {e}"]) from e
    if not isinstance(doc, dict):
        raise ScenarioError([f"{path}: a scenario is a mapping, got {type(doc).__name__}"])
    try:
        s = Scenario.model_validate(doc)
    except ValidationError as e:
        raise ScenarioError([f"{path}: {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                             for err in e.errors()]) from e
    if s.id != path.stem:
        raise ScenarioError([f"{path}: id: {s.id!r} differs from the file name {path.stem!r}"])
    return s


def load_dir(directory: Path = SUITE, tags: Iterable[str] = ()) -> list[Scenario]:
    """Every `*.yaml` under `directory` (recursively), sorted by id; only those with any of `tags` if given."""
    if not directory.is_dir():
        raise ScenarioError([f"{directory}: not a directory"])
    files = sorted(directory.rglob("*.yaml"))
    if not files:
        raise ScenarioError([f"{directory}: no *.yaml scenario files"])
    problems: list[str] = []
    out: list[Scenario] = []
    for f in files:
        try:
            out.append(load_file(f))
        except ScenarioError as e:
            problems.extend(e.problems)
    seen: dict[str, int] = {}
    for s in out:
        seen[s.id] = seen.get(s.id, 0) + 1
    problems.extend(f"{directory}: id {i!r} is used by {n} files" for i, n in seen.items() if n > 1)
    if problems:
        raise ScenarioError(problems)
    wanted = set(tags)
    return sorted((s for s in out if not wanted or wanted & set(s.tags)), key=lambda s: s.id)
