"""The tool registry: names, risk, schemas, and that runbooks' evidence parameters fit the input models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.base import Risk, ToolInput, ToolResult
from tools.registry import clients_needed, default_tools, get_tool

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
PREFIXES = ("prometheus_", "cloudwatch_", "k8s_", "serving_", "rightsize_")
# Values a runbook placeholder could take, for checking parameters against the input models.
SAMPLE_CONTEXT = {"namespace": "llm-prod", "deployment": "chat-lite", "model_name": "llama-3.1-8b-instruct",
                  "node": "ip-10-0-130-10.ec2.internal", "hpa": "chat-lite", "cluster": "prod"}


def test_registry_is_read_only_well_named_and_schema_ready() -> None:
    tools = default_tools()
    assert len({t.name for t in tools}) == len(tools)
    for t in tools:
        assert t.name.startswith(PREFIXES) and re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", t.name), t.name
        assert t.risk == Risk.READ
        assert issubclass(t.input, ToolInput) and issubclass(t.output, ToolResult)
        assert t.input.model_config.get("extra") == "forbid"
        schema = t.json_schema()
        json.dumps(schema)
        for field, prop in schema["parameters"].get("properties", {}).items():
            assert prop.get("description"), f"{t.name}.{field} has no description for the model"
    assert clients_needed() == {"prometheus", "cloudwatch", "k8s_read", "serving_knowledge"}
    assert "k8s_rollout_undo" not in {t.name for t in tools}  # writes only through the guarded executor


def test_get_tool() -> None:
    assert get_tool("prometheus_query_range").client == "prometheus"
    with pytest.raises(KeyError, match="known tools"):
        get_tool("prometheus_delete_series")


def _fill(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}", lambda m: SAMPLE_CONTEXT.get(m.group(1), "x"), value)
    if isinstance(value, dict):
        return {k: _fill(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v) for v in value]
    return value


def _evidence() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        front = path.read_text().split("---", 2)[1]
        for q in yaml.safe_load(front).get("evidence", []):
            out.append((f"{path.stem}:{q['id']}", q["tool"], q.get("params", {})))
    return out


@pytest.mark.parametrize(("where", "tool", "params"), _evidence(), ids=[e[0] for e in _evidence()])
def test_runbook_evidence_fits_the_tools(where: str, tool: str, params: dict[str, Any]) -> None:
    spec = get_tool(tool)
    spec.input.model_validate(_fill(params))
