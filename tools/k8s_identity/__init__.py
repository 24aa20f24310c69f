"""Who runs this command, according to the cluster: a SelfSubjectReview made with the person's own credentials.

`opsagent changes approve` must not take a name on trust (`--as` is for env: dev only). It sends
`create selfsubjectreviews` (authentication.k8s.io/v1, served by every API server since 1.28 and allowed
to every authenticated user by the built-in `system:basic-user` role) with the approver's credentials:
a client certificate, a token, an OIDC or exec plugin. The API server answers with the username and
groups it authenticated; a certificate it did not sign or a token it does not know is a 401.

The credentials come from the approver's kubeconfig; the cluster (server URL, CA, TLS server name) comes
from the agent's own kubeconfig when one is given. Without that pin a kubeconfig pointing at an API
server the approver runs themselves could vouch for any name they like.

This module reads no settings and no environment itself: callers pass the paths (None for the approver's
kubeconfig lets the Kubernetes client find it the way kubectl does).
"""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, ConfigDict, Field
from urllib3.exceptions import HTTPError

__all__ = ["IdentityError", "KubeIdentity", "review"]


class IdentityError(Exception):
    """The cluster could not say who this is (no credentials, rejected credentials, unreachable)."""


class KubeIdentity(BaseModel):
    model_config = ConfigDict(frozen=True)

    username: str = Field(description="As the API server authenticated it (a certificate's CN, a token's user).")
    uid: str = ""
    groups: list[str] = Field(default_factory=list)
    server: str = Field(description="The API server that vouched for it.")


def _load(kubeconfig: Path | None) -> client.Configuration:
    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None, client_configuration=cfg,
                                persist_config=False)
    except (ConfigException, OSError, TypeError, ValueError) as e:
        where = kubeconfig or "the default kubeconfig (KUBECONFIG or ~/.kube/config)"
        raise IdentityError(f"cannot load your Kubernetes credentials from {where}: {e}") from e
    return cfg


def review(credentials: Path | None, *, cluster: Path | None, timeout_s: float = 15) -> KubeIdentity:
    """Ask the API server who the holder of `credentials` is.

    Args:
        credentials: The approver's kubeconfig (its current context's user). None: the default kubeconfig.
        cluster: A kubeconfig whose current context names the cluster to ask (the agent's own). None: the
            cluster in `credentials` (only where the caller accepts a self-chosen server, e.g. env dev).
        timeout_s: Per request.

    Raises:
        IdentityError: no usable credentials, the server refused them, or it could not be reached.
    """
    cfg = _load(credentials)
    if cluster is not None:
        pinned = _load(cluster)
        cfg.host, cfg.ssl_ca_cert, cfg.verify_ssl = pinned.host, pinned.ssl_ca_cert, pinned.verify_ssl
        cfg.tls_server_name = getattr(pinned, "tls_server_name", None)
    body = client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    with client.ApiClient(cfg) as api:
        try:
            out = client.AuthenticationV1Api(api).create_self_subject_review(body, _request_timeout=timeout_s)
        except ApiException as e:
            why = {401: "the API server does not accept these credentials (unknown certificate or token, or "
                        "expired)", 403: "these credentials may not create selfsubjectreviews"}.get(
                e.status or 0, f"HTTP {e.status} {e.reason}")
            raise IdentityError(f"{cfg.host}: who-am-I (SelfSubjectReview) failed: {why}") from e
        except (HTTPError, OSError) as e:
            raise IdentityError(f"{cfg.host}: cannot reach the API server to check who you are: {e}") from e
    info = out.status.user_info if out.status else None
    if info is None or not info.username:
        raise IdentityError(f"{cfg.host}: the SelfSubjectReview named nobody")
    return KubeIdentity(username=info.username, uid=info.uid or "", groups=list(info.groups or []),
                        server=str(cfg.host))
