"""Certificates, keys, static tokens and kubeconfigs for the sandbox's control plane.

Three identities reach the apiserver from outside: `admin` (cluster-admin, for the sandbox itself),
`opsagent-reader` (the agent's read-only identity) and `opsagent-executor` (the only identity that
may change serving Deployments). RBAC for the last two is created by `cluster.py`; this module only
mints their credentials. People (approvers) get client certificates from `issue_person`, the way a
cluster's users commonly authenticate: CN is the username, O the groups. Nothing here is secret
beyond the sandbox: it is loopback-only test PKI (so the CA key is kept, to mint those later).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ADMIN = "admin"
READER = "opsagent-reader"
EXECUTOR = "opsagent-executor"
IDENTITIES = (ADMIN, READER, EXECUTOR)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def token_file(self) -> Path:
        return self.dir / "tokens.csv"

    def kubeconfig(self, identity: str) -> Path:
        return self.dir.parent / f"{identity}.kubeconfig"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def create(pki_dir: Path, apiserver_url: str) -> Pki:
    """Mint a CA, the apiserver's serving certificate, a service-account key and three tokens.

    Writes one kubeconfig per identity next to `pki_dir` and returns the paths.
    """
    pki_dir.mkdir(parents=True, exist_ok=True)
    pki = Pki(pki_dir)
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsagent-sandbox-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    srv_key = _key()
    sans: list[x509.GeneralName] = [
        x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
    ]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "10.96.0.1")]
    srv = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = _key()
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.ca_key.write_bytes(_pem_key(ca_key))
    pki.ca_key.chmod(0o600)
    pki.serving_cert.write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    pki.serving_key.write_bytes(_pem_key(srv_key))
    pki.sa_key.write_bytes(_pem_key(sa_key))
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for p in (pki.serving_key, pki.sa_key):
        p.chmod(0o600)

    tokens = {ident: secrets.token_hex(24) for ident in IDENTITIES}
    groups = {ADMIN: "system:masters", READER: "opsagent", EXECUTOR: "opsagent"}
    pki.token_file.write_text(
        "".join(f'{tokens[i]},{i},{i},"{groups[i]}"\n' for i in IDENTITIES)
    )
    pki.token_file.chmod(0o600)
    for ident in IDENTITIES:
        write_kubeconfig(pki.kubeconfig(ident), apiserver_url, pki.ca_cert, ident, tokens[ident])
    return pki


def issue_person(pki: Pki, apiserver_url: str, username: str, groups: tuple[str, ...] = (),
                 days: int = 30) -> Path:
    """A kubeconfig for a person: a client certificate with CN=username, O=groups, signed by the sandbox CA
    (the apiserver's --client-ca-file). Written next to the others as person-<username>.kubeconfig."""
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = _key()
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, username),
                         *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    path = pki.kubeconfig(f"person-{username}")
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": apiserver_url,
                                                     "certificate-authority": str(pki.ca_cert)}}],
        "users": [{"name": username, "user": {
            "client-certificate-data": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
            "client-key-data": base64.b64encode(_pem_key(key)).decode()}}],
        "contexts": [{"name": f"{username}@sandbox", "context": {"cluster": "sandbox", "user": username}}],
        "current-context": f"{username}@sandbox",
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, token: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": f"{user}@sandbox", "context": {"cluster": "sandbox", "user": user}}],
        "current-context": f"{user}@sandbox",
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
