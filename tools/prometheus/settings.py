"""Settings for the Prometheus integration. Passed in by the caller; nothing here reads the environment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class PrometheusSettings(BaseModel):
    """How to reach Prometheus and how much data one query may bring back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(default="http://127.0.0.1:9090", description="Base URL, without /api/v1.")
    timeout_s: float = Field(default=10.0, gt=0, le=300,
                             description="Per-request timeout in seconds; also sent as Prometheus' own `timeout`.")
    max_points: int = Field(default=720, ge=10, le=11_000,
                            description="Most points per series a range query returns. The step grows to stay "
                                        "under it; 720 is 12 h at one-minute resolution. Prometheus refuses >11,000.")
    max_series: int = Field(default=50, ge=1, le=1_000,
                            description="Most series kept per query (largest first); the rest are counted as dropped.")
    scrape_interval_s: float = Field(default=15.0, gt=0, le=3_600,
                                     description="The smallest useful step: finer steps only repeat samples.")
    headers: dict[str, SecretStr] = Field(default_factory=dict,
                                          description="Extra request headers (e.g. Authorization); kept secret.")
    verify_tls: bool = True
    gzip: bool = Field(default=True, description="Ask for gzip-compressed answers. Turn off for a Prometheus on "
                       "the same host: large range answers (tens of MB) then cost neither side the compression.")
