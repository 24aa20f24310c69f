"""Settings for the CloudWatch integration. Passed in by the caller; nothing here reads the environment.

Credentials are optional: without them boto3's own chain applies (instance profile, IRSA, ~/.aws).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class CloudWatchSettings(BaseModel):
    """How to reach CloudWatch and CloudWatch Logs, and how much one call may bring back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(default="us-east-1", min_length=1)
    endpoint_url: str | None = Field(default=None, description="Override for both services (moto, LocalStack).")
    logs_endpoint_url: str | None = Field(default=None, description="Override for CloudWatch Logs only.")
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    profile: str | None = Field(default=None, description="A named profile from the shared AWS config.")
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    read_timeout_s: float = Field(default=20.0, gt=0, le=300)
    max_attempts: int = Field(default=3, ge=1, le=10,
                              description="boto3 attempts per call (standard retry mode backs off on throttling).")
    max_points: int = Field(default=720, ge=10, le=100_800,
                            description="Most points per metric; the period grows to stay under it.")
    max_log_events_scanned: int = Field(default=10_000, ge=1, le=1_000_000,
                                        description="Matching log events counted before a search stops.")
    max_log_pages: int = Field(default=20, ge=1, le=1_000, description="FilterLogEvents pages read before stopping.")
    log_page_size: int = Field(default=1_000, ge=1, le=10_000, description="Events asked for per FilterLogEvents page.")
    insights_timeout_s: float = Field(default=30.0, gt=0, le=900,
                                      description="How long to wait for a Logs Insights query before stopping it.")
    insights_poll_s: float = Field(default=1.0, gt=0, le=30)
