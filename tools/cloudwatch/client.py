"""boto3 clients for CloudWatch and CloudWatch Logs, built from settings, called off the event loop.

boto3 is synchronous: every call runs in a worker thread (`asyncio.to_thread`) so a slow AWS answer
never blocks the agent. Low-level clients are thread-safe; the session is only used here, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from pydantic import BaseModel, ConfigDict

from tools.cloudwatch.errors import CloudWatchError, wrap
from tools.cloudwatch.settings import CloudWatchSettings

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient as BotoCloudWatch
    from mypy_boto3_logs import CloudWatchLogsClient as BotoLogs

T = TypeVar("T")


class CloudWatchStatus(BaseModel):
    """What `check()` found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    region: str
    endpoint: str | None
    metrics_ok: bool
    logs_ok: bool
    latency_ms: float | None = None
    detail: str = ""


class CloudWatchClient:
    """The two boto3 clients the CloudWatch tools use."""

    def __init__(self, settings: CloudWatchSettings) -> None:
        self.settings = settings
        session, config = aws_session(settings)
        self.metrics: BotoCloudWatch = session.client("cloudwatch", endpoint_url=settings.endpoint_url, config=config)
        self.logs: BotoLogs = session.client("logs", endpoint_url=settings.logs_endpoint_url or settings.endpoint_url,
                                             config=config)

    async def call(self, what: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Run one boto3 call in a thread; any failure becomes a `CloudWatchError` naming `what`."""
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except CloudWatchError:
            raise
        except Exception as e:  # boto3 raises many unrelated types; all are wrapped with context
            raise wrap(e, what) from e

    async def check(self) -> CloudWatchStatus:
        """Probe both services with the cheapest read each has."""
        t0 = time.monotonic()
        problems: list[str] = []
        metrics_ok = logs_ok = True
        try:
            # Filtered to a namespace nobody writes: proves credentials and reachability without listing
            # every metric (unfiltered ListMetrics is slow on large accounts and on moto).
            await self.call("CloudWatch ListMetrics (health check)", self.metrics.list_metrics,
                            Namespace="opsagent/health-check")
        except CloudWatchError as e:
            metrics_ok = False
            problems.append(str(e))
        try:
            await self.call("CloudWatch Logs DescribeLogGroups (health check)", self.logs.describe_log_groups, limit=1)
        except CloudWatchError as e:
            logs_ok = False
            problems.append(str(e))
        return CloudWatchStatus(
            ok=metrics_ok and logs_ok, region=self.settings.region, endpoint=self.settings.endpoint_url,
            metrics_ok=metrics_ok, logs_ok=logs_ok, latency_ms=round((time.monotonic() - t0) * 1000, 1),
            detail="; ".join(problems),
        )

    def close(self) -> None:
        self.metrics.close()
        self.logs.close()


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def aws_session(settings: CloudWatchSettings) -> tuple[boto3.session.Session, Config]:
    """The boto3 session and client config these settings describe (shared with the audit's AWS sinks)."""
    session = boto3.session.Session(
        aws_access_key_id=_secret(settings.access_key_id),
        aws_secret_access_key=_secret(settings.secret_access_key),
        aws_session_token=_secret(settings.session_token),
        region_name=settings.region,
        profile_name=settings.profile,
    )
    config = Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        user_agent_extra="opsagent",
    )
    return session, config
