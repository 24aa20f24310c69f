"""Who is at the keyboard, for the commands where it matters (deciding on a change, proposing one).

Outside `env: dev` the answer is the cluster's: a SelfSubjectReview made with the caller's own Kubernetes
credentials against the agent's own cluster (tools/k8s_identity, docs/security.md). `--as NAME` is for dev.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from agent.app import App
from agent.audit.events import AuditEvent, AuditKind, inputs_hash

KubeconfigOpt = Annotated[
    Path | None, typer.Option("--kubeconfig", help="Your own Kubernetes credentials; the API server says who "
                              "you are (SelfSubjectReview). Default: KUBECONFIG or ~/.kube/config.")
]


def cli_identity(app: App, who: str | None, kubeconfig: Path | None, action: str) -> str:
    """Who is deciding: `kubernetes:<username>` as the agent's cluster authenticates the caller's own
    credentials, or, in env dev only, the person `--as` names. Raises ValueError (refused) otherwise."""
    from tools.k8s_identity import IdentityError, review

    s = app.settings
    if who is not None:
        if s.env != "dev":
            _refused(app, f"cli:as:{who}", action, f"--as is accepted only in env: dev (env is {s.env})")
            raise ValueError(f"--as is accepted only with env: dev (this is env: {s.env}): outside dev you are who "
                             "the cluster says your Kubernetes credentials are; drop --as (and pass --kubeconfig "
                             "if yours is not the default)")
        return who
    cluster = s.kubernetes.reader_kubeconfig
    if cluster is None and s.env != "dev":
        raise ValueError("kubernetes.reader_kubeconfig is not set, so there is no cluster of the agent's own to ask "
                         "who you are (a kubeconfig of yours could point at any server); set it")
    try:
        me = review(kubeconfig, cluster=cluster)
    except IdentityError as e:
        _refused(app, "cli:unverified", action, str(e))
        raise ValueError(f"cannot establish who you are: {e}") from e
    return f"kubernetes:{me.username}"


def _refused(app: App, actor: str, action: str, reason: str) -> None:
    """Audit a CLI decision refused before anyone could be named (the executor audits the rest)."""
    app.audit.append(AuditEvent(at=dt.datetime.now(dt.UTC), kind=AuditKind.APPROVAL, actor=actor, action=action,
                                inputs_hash=inputs_hash(action), decision="refused", reason=reason))


