"""One tool-calling conversation with a chat model, over the official OpenAI or Anthropic SDK.

The reasoner speaks to a `Conversation`: ask for a turn, hand back tool results, add a user note. Each
provider keeps its own message format here, so the reasoner never branches on a provider. Clients are
built from `LlmConfig` when a conversation opens (never at import time) with an explicit API key and base
URL, so neither comes from the environment, and closed when it ends: a client is bound to the event loop
that made it. This module only carries messages; it runs no tool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from agent.config import LlmConfig

OPENAI_URL = "https://api.openai.com/v1"
ANTHROPIC_URL = "https://api.anthropic.com"
# Anthropic requires an output cap; a ranked diagnosis with its sentences fits well within it.
ANTHROPIC_MAX_TOKENS = 4096
# Sent when an OpenAI-compatible server (a team's vLLM) needs no key: the SDK requires a value, and an
# explicit one keeps it from reading OPENAI_API_KEY from the environment.
NO_KEY = "not-needed"


class ModelError(Exception):
    """The model's reply could not be used at all (no choices, an empty body)."""


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str | dict[str, Any]  # OpenAI sends a JSON string, Anthropic an object


@dataclass
class Turn:
    text: str
    calls: list[ToolCall] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0


class Conversation(Protocol):
    async def turn(self, *, force_tool: str | None = None) -> Turn: ...

    def add_tool_results(self, results: list[tuple[ToolCall, str, bool]]) -> None:
        """Answer every call of the last turn: `(call, text, is_error)`."""

    def add_user(self, text: str) -> None: ...


def check_config(cfg: LlmConfig) -> None:
    """Refuse settings that cannot work, at startup rather than at the first incident."""
    if cfg.provider == "none":
        raise ValueError("llm.provider is 'none': use the rules reasoner")
    if cfg.provider == "openai-compatible" and not cfg.base_url:
        raise ValueError("llm.base_url is required for provider 'openai-compatible' (e.g. http://vllm:8000/v1)")
    if cfg.provider in ("openai", "anthropic") and cfg.api_key is None:
        raise ValueError(f"llm.api_key is required for provider '{cfg.provider}'")


def base_url(cfg: LlmConfig) -> str:
    if cfg.base_url:
        return cfg.base_url
    return ANTHROPIC_URL if cfg.provider == "anthropic" else OPENAI_URL


@asynccontextmanager
async def open_conversation(cfg: LlmConfig, system: str, user: str, tools: list[dict[str, Any]], *,
                            max_retries: int) -> AsyncIterator[Conversation]:
    """Open a client for `cfg` and a conversation that starts with `system` and `user`; close the client after.

    `tools` are `{"name", "description", "parameters"}` function schemas.
    """
    check_config(cfg)
    key = cfg.api_key.get_secret_value() if cfg.api_key is not None else NO_KEY
    if cfg.provider == "anthropic":
        async with AsyncAnthropic(api_key=key, base_url=base_url(cfg), timeout=cfg.timeout_s,
                                  max_retries=max_retries) as anthropic_client:
            yield _AnthropicConversation(anthropic_client, cfg.model, system, user, tools)
    else:
        async with AsyncOpenAI(api_key=key, base_url=base_url(cfg), timeout=cfg.timeout_s,
                               max_retries=max_retries) as openai_client:
            yield _OpenAIConversation(openai_client, cfg.model, system, user, tools)


class _OpenAIConversation:
    """Chat Completions: the one protocol OpenAI and OpenAI-compatible servers (vLLM) both speak."""

    def __init__(self, client: AsyncOpenAI, model: str, system: str, user: str, tools: list[dict[str, Any]]) -> None:
        self.client = client
        self.model = model
        self.messages: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        self.tools: list[Any] = [{"type": "function", "function": t} for t in tools]

    async def turn(self, *, force_tool: str | None = None) -> Turn:
        choice: Any = {"type": "function", "function": {"name": force_tool}} if force_tool else "auto"
        resp = await self.client.chat.completions.create(model=self.model, messages=self.messages, tools=self.tools,
                                                         tool_choice=choice)
        if not resp.choices:
            raise ModelError("the model returned no choices")
        msg = resp.choices[0].message
        calls: list[ToolCall] = []
        raw_calls: list[dict[str, Any]] = []
        for c in msg.tool_calls or []:
            fn = getattr(c, "function", None)  # custom (non-function) tool calls are not ours
            if fn is None:
                continue
            calls.append(ToolCall(id=c.id, name=fn.name, arguments=fn.arguments))
            raw_calls.append({"id": c.id, "type": "function",
                              "function": {"name": fn.name, "arguments": fn.arguments}})
        assistant: dict[str, Any] = {"role": "assistant", "content": msg.content}
        if raw_calls:
            assistant["tool_calls"] = raw_calls
        self.messages.append(assistant)
        usage = resp.usage
        return Turn(text=msg.content or "", calls=calls, input_tokens=usage.prompt_tokens if usage else 0,
                    output_tokens=usage.completion_tokens if usage else 0)

    def add_tool_results(self, results: list[tuple[ToolCall, str, bool]]) -> None:
        for call, text, _ in results:
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": text})

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})


class _AnthropicConversation:
    """Anthropic Messages: tool uses are content blocks; their results go back in the next user message."""

    def __init__(self, client: AsyncAnthropic, model: str, system: str, user: str,
                 tools: list[dict[str, Any]]) -> None:
        self.client = client
        self.model = model
        self.system = system
        self.messages: list[Any] = [{"role": "user", "content": [{"type": "text", "text": user}]}]
        self.tools: list[Any] = [{"name": t["name"], "description": t["description"],
                                  "input_schema": t["parameters"]} for t in tools]

    async def turn(self, *, force_tool: str | None = None) -> Turn:
        choice: Any = {"type": "tool", "name": force_tool} if force_tool else {"type": "auto"}
        resp = await self.client.messages.create(model=self.model, max_tokens=ANTHROPIC_MAX_TOKENS,
                                                 system=self.system, messages=self.messages, tools=self.tools,
                                                 tool_choice=choice)
        texts: list[str] = []
        calls: list[ToolCall] = []
        blocks: list[dict[str, Any]] = []
        for b in resp.content:
            if b.type == "text" and b.text:
                texts.append(b.text)
                blocks.append({"type": "text", "text": b.text})
            elif b.type == "tool_use":
                args = b.input if isinstance(b.input, dict) else {"_unparsed": str(b.input)}
                calls.append(ToolCall(id=b.id, name=b.name, arguments=args))
                blocks.append({"type": "tool_use", "id": b.id, "name": b.name, "input": args})
        if not blocks:
            raise ModelError("the model returned an empty message")
        self.messages.append({"role": "assistant", "content": blocks})
        u = resp.usage
        return Turn(text="\n".join(texts), calls=calls,
                    input_tokens=(u.input_tokens or 0) + (u.cache_read_input_tokens or 0)
                    + (u.cache_creation_input_tokens or 0),
                    output_tokens=u.output_tokens or 0)

    def add_tool_results(self, results: list[tuple[ToolCall, str, bool]]) -> None:
        self._user_blocks([{"type": "tool_result", "tool_use_id": call.id, "content": text, "is_error": is_error}
                           for call, text, is_error in results])

    def add_user(self, text: str) -> None:
        self._user_blocks([{"type": "text", "text": text}])

    def _user_blocks(self, blocks: list[dict[str, Any]]) -> None:
        last = self.messages[-1]
        if last["role"] == "user":  # roles alternate: join a note to the tool results it follows
            last["content"].extend(blocks)
        else:
            self.messages.append({"role": "user", "content": blocks})
