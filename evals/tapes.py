"""Record the read tools' outputs during a live run; play them back in replay mode.

The tool registry is an explicit list a caller may replace (tools.registry), so recording wraps each
read tool's function and replay swaps it for one that answers from the tape. Everything between the
tools and the score — runbooks, the runner and its audit, the reasoner, proposals, policy — is the
real code in both modes. A call the tape does not hold fails like an unreachable integration would,
so a runbook that starts asking something new shows up as missing evidence, not a crash.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pydantic import BaseModel

from tools.base import ToolError, ToolInput, ToolResult, ToolSpec


def tape_key(tool: str, params: ToolInput) -> str:
    return tool + " " + json.dumps(params.model_dump(mode="json", exclude_none=True), sort_keys=True)


class Tape(BaseModel):
    """Tool outputs by call: `tool {canonical params}` → result JSON (or an error message)."""

    outputs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    # The answers to the second, third ... call of the same key, in order ({"output": …} or {"error": …}):
    # a re-triage after a change reads the same object again and must not rewrite what the first triage saw.
    repeats: dict[str, list[dict[str, Any]]] = {}


def recording(tools: list[ToolSpec[Any, Any]], tape: Tape) -> list[ToolSpec[Any, Any]]:
    """The same tools, each writing its output (or its error) to `tape` as it answers."""

    def wrap(spec: ToolSpec[Any, Any]) -> ToolSpec[Any, Any]:
        async def fn(client: Any, params: ToolInput) -> ToolResult:
            key = tape_key(spec.name, params)
            seen = key in tape.outputs or key in tape.errors
            try:
                out: ToolResult = await spec.fn(client, params)
            except ToolError as e:
                if seen:
                    tape.repeats.setdefault(key, []).append({"error": str(e)})
                else:
                    tape.errors[key] = str(e)
                raise
            if seen:
                tape.repeats.setdefault(key, []).append({"output": out.model_dump(mode="json")})
            else:
                tape.outputs[key] = out.model_dump(mode="json")
            return out

        return dataclasses.replace(spec, fn=fn)

    return [wrap(t) for t in tools]


def replaying(tools: list[ToolSpec[Any, Any]], tape: Tape) -> list[ToolSpec[Any, Any]]:
    """The same tools (names, inputs, risks), answering from `tape` and reaching nothing."""

    calls: dict[str, int] = {}

    def wrap(spec: ToolSpec[Any, Any]) -> ToolSpec[Any, Any]:
        async def fn(client: Any, params: ToolInput) -> ToolResult:
            key = tape_key(spec.name, params)
            n = calls[key] = calls.get(key, 0) + 1
            later = tape.repeats.get(key, [])
            if n > 1 and later:  # the n-th call gets the n-th answer; past the last, the last again
                answer = later[min(n - 2, len(later) - 1)]
                if "error" in answer:
                    raise ToolError(answer["error"])
                again: ToolResult = spec.output.model_validate(answer["output"])
                return again
            if key in tape.outputs:
                result: ToolResult = spec.output.model_validate(tape.outputs[key])
                return result
            if key in tape.errors:
                raise ToolError(tape.errors[key])
            raise ToolError(f"{spec.name}: this call is not in the recording ({key[:200]}); re-record the scenario")

        return dataclasses.replace(spec, fn=fn, client="tape")

    return [wrap(t) for t in tools]
