"""The explicit list of read tools the agent may call, and look-up by name.

Registration is this list, nothing else: no discovery, no subclass magic. A test or an entry point
can pass its own list to the runner instead. Write tools (`tools.k8s_write`) are deliberately not
here: only the guarded executor reaches them.
"""

from __future__ import annotations

from typing import Any

from tools.base import ToolSpec
from tools.cloudwatch.tools import TOOLS as CLOUDWATCH_TOOLS
from tools.k8s_read.tools import TOOLS as K8S_READ_TOOLS
from tools.prometheus.tools import TOOLS as PROMETHEUS_TOOLS
from tools.rightsize.cloudwatch import TOOLS as RIGHTSIZE_CLOUDWATCH_TOOLS
from tools.rightsize.history import TOOLS as RIGHTSIZE_TOOLS
from tools.serving_knowledge.tools import TOOLS as SERVING_TOOLS


def default_tools() -> list[ToolSpec[Any, Any]]:
    """Every read tool, in a stable order (Prometheus, CloudWatch, Kubernetes, serving knowledge, right-sizing)."""
    tools = [*PROMETHEUS_TOOLS, *CLOUDWATCH_TOOLS, *K8S_READ_TOOLS, *SERVING_TOOLS, *RIGHTSIZE_TOOLS,
             *RIGHTSIZE_CLOUDWATCH_TOOLS]
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"tool names registered twice: {duplicates}")
    return tools


def get_tool(name: str, tools: list[ToolSpec[Any, Any]] | None = None) -> ToolSpec[Any, Any]:
    """The tool called `name`; KeyError naming the known tools if there is none."""
    for t in tools if tools is not None else default_tools():
        if t.name == name:
            return t
    known = ", ".join(sorted(t.name for t in (tools if tools is not None else default_tools())))
    raise KeyError(f"no tool named {name!r}; known tools: {known}")


def clients_needed(tools: list[ToolSpec[Any, Any]] | None = None) -> set[str]:
    """The client keys (`ToolSpec.client`) an entry point must build for these tools."""
    return {t.client for t in (tools if tools is not None else default_tools())}
