"""The shape every tool has: a typed input, a typed result, a declared risk, a toolset.

A tool is an async function `(client, params) -> result`. Its `ToolSpec` is what the guarded runner,
the policy engine, the runbook checker and an LLM's tool schema all read; registration is an
explicit list (`tools.registry`), never discovery by subclassing.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer


class Risk(enum.IntEnum):
    """How much harm a tool or an action can do; ordered so a runbook or a runner can set a ceiling.

    The one definition of risk: tools declare it, runbooks cap it, actions carry it (`ACTION_RISK`),
    and the policy file names it by `label` (its `RiskName` vocabulary is checked against this enum).
    """

    READ = 0
    PROPOSE = 1
    MUTATE = 2
    DESTRUCTIVE = 3

    @property
    def label(self) -> str:
        """The lower-case name files and the policy use: `read`, `propose`, `mutate`, `destructive`."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: object) -> Risk:
        """A Risk from itself, its label (any case) or its number; a clear error for anything else."""
        if isinstance(value, Risk):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool) and value in cls._value2member_map_:
            return cls(value)
        raise ValueError(f"risk must be one of {', '.join(r.label for r in cls)}, not {value!r}")


# A Risk in files and models: read from its label, written as its label.
RiskLabel = Annotated[Risk, BeforeValidator(Risk.parse), PlainSerializer(lambda r: r.label, return_type=str)]


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


def _assume_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


# A time in a tool input: RFC 3339 text or unix seconds; a time without a zone is read as UTC.
UtcDatetime = Annotated[dt.datetime, AfterValidator(_assume_utc)]

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


class Untrusted:
    """Marker for text that came from outside: labels, annotations, event messages, log lines.

    Such text is data, never instructions. Fields typed `UntrustedStr` carry this marker so the agent
    can find them (`untrusted_values`) and fence them before a model reads them; the value itself stays
    a plain `str`, so rules and features can still compare it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "Untrusted()"


UNTRUSTED = Untrusted()
UntrustedStr = Annotated[str, UNTRUSTED]


def untrusted_values(result: BaseModel) -> list[tuple[str, str]]:
    """Return `(path, text)` for every non-empty untrusted string in a result, e.g. `pods[0].labels.team`."""
    found: list[tuple[str, str]] = []
    _walk_model(result, "", found)
    return found


def _walk_model(model: BaseModel, path: str, found: list[tuple[str, str]]) -> None:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        sub = f"{path}.{name}" if path else name
        if any(isinstance(m, Untrusted) for m in field.metadata):
            if isinstance(value, str) and value:
                found.append((sub, value))
            continue
        _walk_value(value, field.annotation, sub, found)


def _walk_value(value: Any, annotation: Any, path: str, found: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, BaseModel):
        _walk_model(value, path, found)
        return
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        if any(isinstance(m, Untrusted) for m in args[1:]):
            if isinstance(value, str) and value:
                found.append((path, value))
            return
        _walk_value(value, args[0], path, found)
    elif origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                _walk_value(value, arg, path, found)
                return
    elif isinstance(value, dict):
        inner = args[1] if len(args) == 2 else Any
        for k, v in value.items():
            _walk_value(v, inner, f"{path}.{k}", found)
    elif isinstance(value, list | tuple):
        inner = args[0] if args else Any
        for i, v in enumerate(value):
            _walk_value(v, inner, f"{path}[{i}]", found)
