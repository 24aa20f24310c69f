"""The policy's people table: identities resolve to one person, roles attach to people, and the old
role → identities form is refused with a pointer to the new one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from agent.entry.cli import app as cli
from agent.policy.approvals import person_of, roles_of
from agent.policy.evaluate import load_policy
from agent.policy.model import Policy

ROOT = Path(__file__).parents[2]
RULES = [{"id": "all", "description": "x", "effect": "require_approval", "approvers": {"roles": ["oncall"]}}]
POLICY = Policy.model_validate({"version": 1, "rules": RULES, "people": {
    "alice": {"kubernetes": ["alice", "alice@example.com"], "slack": ["U024BE7LH"], "roles": ["oncall"]},
    "bob": {"kubernetes": ["bob"], "roles": ["ml-platform"]}}})


@pytest.mark.parametrize(("identity", "person"), [
    ("kubernetes:alice", "alice"),
    ("kubernetes:alice@example.com", "alice"),
    ("slack:U024BE7LH", "alice"),
    ("alice", "alice"),  # a name, where an entry point established the person itself (dev --as, evals)
    ("user:alice", "alice"),
    ("kubernetes:bob", "bob"),
    ("slack:bob", None),  # bob has no Slack id: a Slack user named "bob" is nobody
    ("kubernetes:U024BE7LH", None),  # a Slack id presented as a Kubernetes username is nobody
    ("kubernetes:mallory", None),
    ("mallory", None),
    ("email:alice", None),  # an unknown channel
    ("kubernetes:", None),
])
def test_identities_resolve_to_one_person_or_nobody(identity: str, person: str | None) -> None:
    assert person_of(POLICY, identity) == person


def test_roles_attach_to_people() -> None:
    assert roles_of(POLICY, "alice") == ["oncall"] and roles_of(POLICY, "mallory") == []
    assert POLICY.role_members("oncall") == ["alice"]


@pytest.mark.parametrize(("doc", "why"), [
    ({"roles": {"oncall": ["alice", "U024BE7LH"]}}, "replaced by `people:`"),
    ({"people": {"alice": {"slack": ["U1"]}, "bob": {"slack": ["U1"]}}}, "belongs to both alice and bob"),
    ({"people": {"Alice Smith": {"roles": ["oncall"]}}}, "lower-case"),
    ({"people": {"alice": {"roles": ["oncall"], "email": "a@x"}}}, "Extra inputs"),
])
def test_bad_people_tables_are_refused(doc: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Policy.model_validate({"version": 1, "rules": RULES, **doc})


def test_a_rule_naming_a_role_nobody_holds_stops_the_policy_loading(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"version": 1, "rules": RULES, "people": {"bob": {"roles": ["ml-platform"]}}}))
    with pytest.raises(ValueError, match=r"names roles with no members: \['oncall'\]"):
        load_policy(f)
    assert load_policy(ROOT / "policies" / "default.yaml").people["alice"].slack == ["U024BE7LH"]


def test_outside_dev_the_cli_refuses_as_and_audits_it(tmp_path: Path) -> None:
    config = tmp_path / "prod.yaml"
    config.write_text(yaml.safe_dump({
        "env": "prod", "state_dir": str(tmp_path / "state"), "server": {"auth_tokens": "Zq8vR2mX5tK9wL3nB7cJ4hF6dS1a"},
        "audit": {"key": "9f2c4e1a7b3d5f608e1c2a4b6d8f0e1a3c5e7f9b1d3f5a7c9e1b3d5f7a9c1e3b",
                  "allow_rewritable_checkpoints": True}}))
    out = CliRunner().invoke(cli, ["changes", "approve", "chg-any", "--as", "bob", "--config", str(config)])
    assert out.exit_code == 4 and "--as is accepted only with env: dev" in out.output, out.output
    shown = CliRunner().invoke(cli, ["audit", "show", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    assert "cli:as:bob" in shown.output and "approve chg-any" in shown.output
    # without a cluster of the agent's own to ask, the CLI cannot know who runs it: refused, not guessed
    nobody = CliRunner().invoke(cli, ["changes", "approve", "chg-any", "--config", str(config)])
    assert nobody.exit_code == 4 and "reader_kubeconfig is not set" in nobody.output, nobody.output
