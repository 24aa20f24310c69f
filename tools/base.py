"""The shape every tool has: a typed input, a typed result, a declared risk, a toolset.

A tool is an async function `(client, params) -> result`. Its `ToolSpec` is what the guarded runner,
the policy engine, the runbook checker and an LLM's tool schema all read; registration is an
explicit list (`tools.registry`), never discovery by subclassing.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class Risk(enum.IntEnum):
    """How much harm a tool can do; ordered so a runbook can set a ceiling."""

    READ = 0
    PROPOSE = 1
    MUTATE = 2
    DESTRUCTIVE = 3


class ToolInput(BaseModel):
    """Base for tool inputs: unknown fields are errors, so a model cannot smuggle options in."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolResult(BaseModel):
    """Base for tool results."""

    model_config = ConfigDict(extra="forbid")


class ToolError(Exception):
    """A tool call failed. The message says what was tried and what upstream said.

    `retryable` separates passing faults (timeouts, 5xx, throttling) from permanent ones (bad query,
    403, not found) so the runner knows whether another attempt can help.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ToolUnavailable(ToolError):
    """The integration could not be reached at all (connection refused, DNS, TLS)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


In = TypeVar("In", bound=ToolInput)
Out = TypeVar("Out", bound=ToolResult)


@dataclass(frozen=True)
class ToolSpec(Generic[In, Out]):
    """A registered tool: its name, toolset, risk, models and implementation."""

    name: str  # verb_noun with an integration prefix: prometheus_query_range, k8s_rollout_history
    toolset: str  # e.g. "prometheus/metrics"
    risk: Risk
    description: str  # written for a model choosing tools: what it returns and when to use it
    input: type[In]
    output: type[Out]
    fn: Callable[[Any, In], Awaitable[Out]]
    client: str  # which client the runner passes: "prometheus", "cloudwatch", "k8s_read", ...

    def json_schema(self) -> dict[str, Any]:
        """The tool as an LLM function-calling schema."""
        return {"name": self.name, "description": self.description, "parameters": self.input.model_json_schema()}
