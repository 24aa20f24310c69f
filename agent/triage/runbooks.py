"""Runbooks: Markdown files whose front matter is the single source of truth for triage knowledge.

Front matter says which alerts a runbook matches, which bounded evidence queries to run (a tool name
and its parameters, with `{label}` placeholders filled from the alert), the hypotheses it weighs
(conditions over evidence features that support or speak against each), and the remediations it may
propose with their risk. The Markdown body is for humans. Loading validates everything — unknown
keys, bad conditions, unknown categories — and says which file and field is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from agent.models import ActionKind, Category
from agent.triage.conditions import ConditionError, compile_condition, compile_value
from tools.base import Risk, RiskLabel

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "runbooks"
_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n?(.*)\Z", re.S)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class RunbookError(ValueError):
    """A runbook file is invalid; the message names the file and the problem."""


def _condition(text: str) -> str:
    try:
        compile_condition(text)
    except ConditionError as e:
        raise ValueError(str(e)) from e
    return text


def _value(v: Any) -> Any:
    if isinstance(v, str):
        try:
            compile_value(v)
        except ConditionError as e:
            raise ValueError(str(e)) from e
    return v


# Checked when the runbook loads, so a typo fails at start-up with the file named, not mid-incident.
Condition = Annotated[str, AfterValidator(_condition)]
ValueExpr = Annotated[str, AfterValidator(_value)]
ParamValue = Annotated[Any, AfterValidator(_value)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    alertnames: list[str] = Field(default_factory=list, description="Alert names this runbook handles.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels that must all be equal.")


class EvidenceQuery(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    tool: str
    params: dict[str, Any] = Field(default_factory=dict)
    requires: list[str] = Field(default_factory=list,
                                description="Context keys that must be known (e.g. deployment); else skipped.")


class Clause(_Strict):
    when: Condition
    weight: float = Field(default=1.0, gt=0, le=10)
    says: str = Field(description="The sentence the report shows when the clause holds.")



class HypothesisSpec(_Strict):
    id: str
    category: Category
    title: str
    culprit: str | None = Field(default=None, description="Context key naming the culprit: deployment, node, ...")
    requires: Condition | None = Field(default=None, description="A condition without which the hypothesis is out.")
    supports: list[Clause]
    against: list[Clause] = Field(default_factory=list)



class Remediation(_Strict):
    hypothesis: str
    action: ActionKind
    target: str | None = Field(default=None, description="Context key of the target object.")
    params: dict[str, ParamValue] = Field(default_factory=dict,
                                          description="Values; a string is an expression over features.")
    when: Condition | None = None
    reason: str



class Objective(_Strict):
    """The service-level objective behind an alert, and the evidence feature that measures it."""

    alertname: str = Field(description="The alert whose own signal this is.")
    signal: ValueExpr = Field(description="An expression over evidence features, e.g. errors.recent.")
    max: float = Field(description="The objective's bound: the signal is out of SLO above it (e.g. 0.02 = 2 %).")
    far: float = Field(default=2.0, gt=1, le=100,
                       description="Far outside the SLO means above far × max: clearly not noise or a flap.")
    says: str = Field(description="The sentence the report shows when the signal is far outside.")


class Runbook(_Strict):
    id: str
    title: str
    match: Match
    risk_ceiling: RiskLabel = Field(default=Risk.PROPOSE,
                                    description="The highest risk any tool or remediation here may have.")
    evidence: list[EvidenceQuery]
    derive: dict[str, ValueExpr] = Field(default_factory=dict,
                                   description="Context keys the alert may lack, as expressions over evidence.")
    hypotheses: list[HypothesisSpec]
    remediations: list[Remediation] = Field(default_factory=list)
    slo: list[Objective] = Field(default_factory=list,
                                 description="Objectives of the alerts this runbook matches; a critical alert "
                                             "whose own signal is far outside its objective is never 'healthy'.")
    body: str = ""
    path: str = ""


    def matches(self, alertname: str, labels: dict[str, str]) -> bool:
        if self.match.alertnames and alertname not in self.match.alertnames:
            return False
        return all(labels.get(k) == v for k, v in self.match.labels.items())


def placeholders(value: Any) -> set[str]:
    """Return the `{name}` placeholders used anywhere in a parameter value."""
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    return set()


def load_file(path: Path) -> Runbook:
    text = path.read_text()
    m = _FRONT.match(text)
    if not m:
        raise RunbookError(f"{path}: no YAML front matter (a runbook starts with a '---' block)")
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        raise RunbookError(f"{path}: front matter is not valid YAML: {e}") from e
    if not isinstance(meta, dict):
        raise RunbookError(f"{path}: front matter must be a mapping")
    try:
        rb = Runbook.model_validate({**meta, "body": m.group(2).strip(), "path": str(path)})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
        raise RunbookError(f"{path}: {problems}") from e
    ids = [q.id for q in rb.evidence]
    if len(ids) != len(set(ids)):
        raise RunbookError(f"{path}: evidence ids repeat: {ids}")
    known = {h.id for h in rb.hypotheses}
    for r in rb.remediations:
        if r.hypothesis not in known:
            raise RunbookError(f"{path}: remediation for unknown hypothesis {r.hypothesis!r}")
    return rb


def load_dir(directory: Path = DEFAULT_DIR) -> list[Runbook]:
    if not directory.is_dir():
        raise RunbookError(f"runbook directory {directory} does not exist")
    books = [load_file(p) for p in sorted(directory.glob("*.md")) if p.name.lower() != "readme.md"]
    seen: dict[str, str] = {}
    for b in books:
        if b.id in seen:
            raise RunbookError(f"runbook id {b.id!r} used by both {seen[b.id]} and {b.path}")
        seen[b.id] = b.path
    return books


def matching(books: list[Runbook], alertname: str, labels: dict[str, str]) -> list[Runbook]:
    return [b for b in books if b.matches(alertname, labels)]
