"""The CI deployment API on `opsagent serve`: a pipeline asks for a deployment and polls its status.

    POST /deployments        {"target": "llm-prod/assist-mini", "version": "2025.09.0", ...}
                             → 202 {"id": "chg-…", "status": "pending_approval", …}; 422 refused at preflight;
                             → 202 {"id": "req-…", "status": "preflight", "url": …} when the preflight takes
                               longer than `server.deploy_wait_s`: it goes on, and GET reports it
    GET  /deployments/{id}   → the change's status, approvals and verification (the canary's outcome); for a
                               req-… id: "preflight" while it runs, then the refusal (422 / 404) or, once
                               proposed, the change's status like its own id

Each pipeline has its own token (`server.pipeline_tokens`, "name=token" pairs from a Secret), checked
in constant time before the body is read; the change request names the pipeline as its requester. A
missing or wrong token is 401 and an unknown target 404, and in both cases nothing is stored or audited.
The request goes through `App.deploy` (preflight, then `ChangeFlow.propose()`): a pipeline can ask,
never approve. A request still in its preflight lives in this process only (a restart loses it, and the
pipeline asks again: the same request proposes the same change id); at most `MAX_RUNNING` run at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.app import App
from agent.change.deploy import DeployOutcome, DeployRefused, DeployRequest, TargetNotFound, parse_target
from agent.entry.http_guard import HttpSecurity
from agent.models import ActionKind

log = logging.getLogger(__name__)
PREFIX = "/deployments"
CHALLENGE = {"www-authenticate": 'Bearer realm="opsagent-deployments"'}
MAX_RUNNING = 16  # preflights past their wait at once; more get 503 (each holds reads of nodes and pods)
KEEP_FINISHED = 256  # finished requests whose answer a GET can still read


class PipelineTokens:
    """One bearer token per pipeline; which pipeline presented it is found by comparing against all."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._by_pipeline = {name: HttpSecurity.build([token]) for name, token in tokens.items() if token}

    @classmethod
    def parse(cls, raw: str) -> PipelineTokens:
        """"name=token" pairs separated by commas or whitespace."""
        pairs: dict[str, str] = {}
        for item in raw.replace(",", " ").split():
            name, sep, token = item.partition("=")
            if not sep or not name or not token:
                raise ValueError("server.pipeline_tokens takes NAME=TOKEN pairs (the token is not shown)")
            pairs[name] = token
        return cls(pairs)

    def pipeline(self, header: bytes | None) -> str | None:
        """The pipeline whose token `header` carries, or None; every token is compared (constant time)."""
        found = None
        for name, sec in self._by_pipeline.items():
            if sec.authenticated(header) and found is None:
                found = name
        return found


def deployment_routes(app: App, tokens: PipelineTokens, *, wait_s: float = 10.0) -> list[Route]:
    # Requests whose preflight outlived `wait_s`, by request id: the task goes on after the answer.
    running: OrderedDict[str, asyncio.Task[tuple[int, dict[str, object]]]] = OrderedDict()

    def caller(request: Request) -> str | None:
        return tokens.pipeline(request.headers.get("authorization", "").encode("latin-1") or None)

    def unauthorized() -> Response:
        return JSONResponse({"error": "missing or invalid pipeline token (Authorization: Bearer TOKEN)"},
                            status_code=401, headers=CHALLENGE)

    async def create(request: Request) -> Response:
        pipeline = caller(request)
        if pipeline is None:
            return unauthorized()
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            ns, name = parse_target(str(body.pop("target", "")))
            req = DeployRequest(namespace=ns, name=name, **body)
        except ValidationError as e:
            return JSONResponse({"error": "invalid deployment request", "details": [
                f"{'.'.join(map(str, x['loc'])) or 'request'}: {x['msg']}" for x in e.errors()]}, status_code=400)
        except (ValueError, TypeError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        if sum(1 for t in running.values() if not t.done()) >= MAX_RUNNING:
            return JSONResponse({"error": f"{MAX_RUNNING} deployment requests are still in their preflight; "
                                          "retry in a minute"}, status_code=503, headers={"retry-after": "60"})
        task = asyncio.create_task(_deploy(app, req, pipeline))
        done, _ = await asyncio.wait({task}, timeout=wait_s)
        if done:
            code, body = task.result()
            return JSONResponse(body, status_code=code)
        rid = f"req-{secrets.token_hex(8)}"
        running[rid] = task
        while len(running) > KEEP_FINISHED:
            oldest = next((k for k, t in running.items() if t.done()), None)
            if oldest is None:
                break
            del running[oldest]
        return JSONResponse({"id": rid, "status": "preflight", "target": req.target, "url": f"{PREFIX}/{rid}"},
                            status_code=202)

    async def status(request: Request) -> Response:
        if caller(request) is None:
            return unauthorized()
        cid = request.path_params["id"]
        rid = None
        if (task := running.get(cid)) is not None:
            if not task.done():
                return JSONResponse({"id": cid, "status": "preflight"}, status_code=200)
            code, body = task.result()
            if code != 202:  # refused, not found, failed: that is the request's end
                return JSONResponse({"request": cid, **body}, status_code=code)
            rid, cid = cid, str(body["id"])  # proposed: from now on the change's own status
        ch = await asyncio.to_thread(app.ledger.get, cid)
        if ch is None or ch.spec.action != ActionKind.DEPLOY:
            return JSONResponse({"error": f"no deployment {cid}"}, status_code=404)
        approvals = await asyncio.to_thread(app.ledger.approvals, cid)
        return JSONResponse({**({"request": rid} if rid else {}), "id": ch.id, "url": f"{PREFIX}/{ch.id}",
                             "target": f"{ch.spec.target.namespace}/{ch.spec.target.name}",
                             "kind": ch.spec.target.kind, "status": ch.status.value, "requester": ch.requester,
                             "approvals": {"have": len([a for a in approvals if a.decision == "approve"]),
                                           "required": ch.approvals_required, "roles": ch.approver_roles},
                             "policy": f"{ch.policy_rule}: {ch.policy_reason}",
                             "verification": ch.result.get("verification"), "error": ch.result.get("error")})

    return [Route(PREFIX, create, methods=["POST"]), Route(PREFIX + "/{id}", status, methods=["GET"])]


async def _deploy(app: App, req: DeployRequest, pipeline: str) -> tuple[int, dict[str, object]]:
    """Preflight and propose; the HTTP status and body the pipeline gets (404 and 422 store nothing)."""
    try:
        out = await app.deploy(req, requester=f"ci:{pipeline}", via="ci")
    except TargetNotFound as e:
        return 404, {"status": "not_found", "error": str(e)}
    except DeployRefused as e:
        return 422, {"status": "refused", "error": str(e)}
    except Exception as e:  # the pipeline polls for this answer: it must say what failed, not vanish in a task
        log.exception("deployment request for %s failed", req.target)
        return 503, {"status": "failed", "error": f"the preflight could not run: {type(e).__name__}: {e}"[:500]}
    return (422 if out.refused else 202), _answer(out)


def _answer(out: DeployOutcome) -> dict[str, object]:
    checks = [{"name": c.name, "ok": c.ok, "summary": c.summary} for c in out.plan.preflight.checks]
    if out.state is None:
        return {"status": "refused", "reasons": out.plan.preflight.reasons(), "preflight": checks}
    ch = out.state.change
    return {"id": ch.id, "status": ch.status.value, "url": f"{PREFIX}/{ch.id}", "summary": out.plan.summary,
            "policy": f"{ch.policy_rule}: {ch.policy_reason}", "approvals_required": ch.approvals_required,
            "preflight": checks}
