"""Who approves, according to the cluster: `opsagent changes approve` outside env: dev takes the approver's
identity from a SelfSubjectReview that the sandbox's real API server answers for the approver's own client
certificate, never from `--as`. Two people are two certificates minted by the sandbox's CA."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from kubernetes import client
from typer.testing import CliRunner

from agent.app import App, build_app
from agent.change.models import ChangeSpec, ChangeStatus
from agent.entry.cli import app as cli
from agent.entry.commands.common import settings_for
from agent.models import ActionKind, ObjectRef
from deploy.sandbox import pki
from deploy.sandbox.fleet import Fleet
from tools.k8s_identity import IdentityError, review

pytestmark = [pytest.mark.sandbox]

ROOT = Path(__file__).parents[2]
STRONG_KEY = "9f2c4e1a7b3d5f608e1c2a4b6d8f0e1a3c5e7f9b1d3f5a7c9e1b3d5f7a9c1e3b"


def _people(sandbox: dict[str, Any]) -> dict[str, Path]:
    sb_pki = pki.Pki(Path(sandbox["_sandbox"].s.dir) / "pki")
    server = sandbox["endpoints"]["apiserver"]
    return {name: pki.issue_person(sb_pki, server, name, ("sre",)) for name in ("alice", "bob", "mallory")}


def _forged(tmp: Path, good: Path) -> Path:
    """alice's kubeconfig with a certificate for CN=bob signed by a CA the API server never heard of."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bob")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    doc = yaml.safe_load(good.read_text())
    doc["users"][0]["user"] = {
        "client-certificate-data": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
        "client-key-data": base64.b64encode(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())).decode()}
    out = tmp / "forged.kubeconfig"
    out.write_text(yaml.safe_dump(doc))
    return out


def test_the_api_server_names_each_person_and_refuses_a_certificate_it_did_not_sign(
        sandbox: dict[str, Any], tmp_path: Path) -> None:
    people = _people(sandbox)
    reader = Path(sandbox["kubeconfigs"]["reader"])
    alice = review(people["alice"], cluster=reader)
    assert alice.username == "alice" and "sre" in alice.groups and "system:authenticated" in alice.groups
    assert review(people["bob"], cluster=reader).username == "bob"
    with pytest.raises(IdentityError, match="does not accept these credentials"):
        review(_forged(tmp_path, people["alice"]), cluster=reader)
    # a kubeconfig naming another server (one its holder runs, answering "bob") is asked at the agent's cluster
    moved = yaml.safe_load(people["alice"].read_text())
    moved["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    elsewhere = tmp_path / "elsewhere.kubeconfig"
    elsewhere.write_text(yaml.safe_dump(moved))
    assert review(elsewhere, cluster=reader).username == "alice"
    # `opsagent sandbox person` mints one from the command line
    sb = sandbox["_sandbox"]
    out = CliRunner().invoke(cli, ["sandbox", "person", "carol", "--group", "ml-platform", "--dir", str(sb.s.dir),
                                   "--port-base", str(sb.s.port_base)])
    assert out.exit_code == 0, out.output
    carol = review(Path(out.output.strip()), cluster=reader)
    assert carol.username == "carol" and "ml-platform" in carol.groups


@pytest.fixture
def prod_config(tmp_path: Path) -> Path:
    """env: prod, the default policy with scaling needing two people (alice oncall, bob ml-platform)."""
    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    for rule in doc["rules"]:
        if rule["id"] == "scale":
            rule["approvers"]["count"] = 2
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.yaml").write_text(yaml.safe_dump(doc))
    f = tmp_path / "settings.yaml"
    f.write_text(yaml.safe_dump({
        "env": "prod", "policies_dir": str(tmp_path / "policies"), "audit": {
            "key": STRONG_KEY,
            # the sandbox has no Object Lock bucket; the file sink is accepted here by saying so
            "allow_rewritable_checkpoints": True},
        "execution": {"claim_ttl_s": 0},
        # this test's process approves and executes itself (the CLI's path), not through an executor process
        "executor": {"mode": "in-process"}}))
    return f


@pytest.fixture
def prod_app(sandbox: dict[str, Any], tmp_path: Path, prod_config: Path) -> Iterator[App]:
    a = build_app(settings_for(prod_config, sandbox, state_dir=str(tmp_path / "state")))
    yield a
    a.close()


def _run(app: App, work: Any) -> Any:
    async def go() -> Any:
        try:
            return await work
        finally:
            await app.aclose_clients()

    return asyncio.run(go())


def test_one_person_cannot_supply_both_approvals_of_a_two_person_rule_but_two_people_can(
        prod_app: App, sandbox: dict[str, Any], admin: client.ApiClient, fleet: Fleet, prod_config: Path,
        tmp_path: Path) -> None:
    assert prod_app.settings.env == "prod"
    people = _people(sandbox)
    apps = client.AppsV1Api(admin)
    w = fleet.workload("embed-api")
    before = int(apps.read_namespaced_deployment(w.name, w.namespace).spec.replicas)
    spec = ChangeSpec(action=ActionKind.SCALE, cluster=prod_app.settings.kubernetes.cluster,
                      target=ObjectRef(kind="Deployment", name=w.name, namespace=w.namespace),
                      params={"replicas": before + 1})
    ch = _run(prod_app, prod_app.executor().propose(spec, reason="load", requester="agent:rules"))
    assert ch.approvals_required == 2
    assert _run(prod_app, prod_app.flow().open(ch)).waiting

    def approve(*args: str) -> Any:
        return CliRunner().invoke(cli, ["changes", "approve", ch.id, *args, "--sandbox", "--sandbox-dir",
                                        str(sandbox["_sandbox"].s.dir), "--state-dir", str(tmp_path / "state"),
                                        "--config", str(prod_config)])

    first = approve("--kubeconfig", str(people["alice"]))
    assert first.exit_code == 0 and "awaiting_approval" in first.output, first.output
    assert "as kubernetes:alice" in first.output

    # alice tries to be bob: --as is not trusted outside dev
    as_bob = approve("--kubeconfig", str(people["alice"]), "--as", "bob")
    assert as_bob.exit_code == 4 and "--as is accepted only with env: dev" in as_bob.output, as_bob.output
    # alice again: the same person, one approval
    again = approve("--kubeconfig", str(people["alice"]))
    assert again.exit_code == 0 and "awaiting_approval" in again.output, again.output
    # a certificate the cluster did not sign, and a real user who is nobody in the policy
    forged = approve("--kubeconfig", str(_forged(tmp_path, people["alice"])))
    assert forged.exit_code == 4 and "cannot establish who you are" in forged.output, forged.output
    nobody = approve("--kubeconfig", str(people["mallory"]))
    assert nobody.exit_code == 4 and "kubernetes:mallory is not anyone in the policy's people table" in nobody.output

    assert int(apps.read_namespaced_deployment(w.name, w.namespace).spec.replicas) == before, "nothing ran yet"
    assert [(a.approver, a.identity) for a in prod_app.ledger.approvals(ch.id)] == [("alice", "kubernetes:alice")]
    refused = [e for e in prod_app.audit.events(None) if e["kind"] == "approval" and e["decision"] == "refused"]
    assert {e["actor"] for e in refused} >= {"cli:as:bob", "cli:unverified", "kubernetes:mallory"}

    try:
        second = approve("--kubeconfig", str(people["bob"]))
        assert second.exit_code in (0, 6), second.output  # 6: applied, verification inconclusive
        assert "as kubernetes:bob" in second.output
        assert int(apps.read_namespaced_deployment(w.name, w.namespace).spec.replicas) == before + 1
        final = prod_app.ledger.get(ch.id)
        assert final is not None and final.status in (ChangeStatus.VERIFIED, ChangeStatus.APPLIED)
        assert {(a.approver, a.identity) for a in prod_app.ledger.approvals(ch.id)} == {
            ("alice", "kubernetes:alice"), ("bob", "kubernetes:bob")}
        assert prod_app.audit.verify().ok
    finally:
        apps.patch_namespaced_deployment(w.name, w.namespace, {"spec": {"replicas": before}})
