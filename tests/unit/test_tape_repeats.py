"""A tape answers a repeated call as the live run was answered: first call, first answer; second, second.

A multi-step scenario reads the same object (a Deployment's rollout history) before and after its
rollback. The tape kept only the last answer, so a replayed first triage saw the history after the
rollback and proposed another revision than the recorded run did (ticket-144).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pydantic import BaseModel, ConfigDict

from evals.tapes import Tape, recording, replaying
from tools.base import Risk, ToolError, ToolSpec


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class Out(BaseModel):
    revision: int


def spec(answers: list[Any]) -> ToolSpec[Any, Any]:
    async def fn(client: Any, params: In) -> Out:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return Out(revision=a)

    return ToolSpec(name="k8s_rollout_history", toolset="kubernetes/read", risk=Risk.READ, description="d",
                    input=In, output=Out, fn=fn, client="k8s_read")


def test_repeated_calls_replay_in_the_order_they_were_answered() -> None:
    tape = Tape()
    [rec] = recording([spec([11, ToolError("apiserver down"), 12])], tape)

    async def run() -> None:
        assert (await rec.fn(None, In(name="chat"))).revision == 11
        with contextlib.suppress(ToolError):
            await rec.fn(None, In(name="chat"))
        assert (await rec.fn(None, In(name="chat"))).revision == 12
        replayed = Tape.model_validate_json(tape.model_dump_json())
        [p] = replaying([spec([])], replayed)
        assert (await p.fn(None, In(name="chat"))).revision == 11
        try:
            await p.fn(None, In(name="chat"))
            raise AssertionError("the second call failed live and must fail in replay")
        except ToolError as e:
            assert "apiserver down" in str(e)
        assert (await p.fn(None, In(name="chat"))).revision == 12
        assert (await p.fn(None, In(name="chat"))).revision == 12, "past the last answer, the last again"

    asyncio.run(run())


def test_a_tape_without_repeats_answers_every_call_with_its_one_answer() -> None:
    tape = Tape(outputs={'k8s_rollout_history {"name": "chat"}': {"revision": 7}})
    [p] = replaying([spec([])], tape)

    async def run() -> None:
        for _ in range(3):
            assert (await p.fn(None, In(name="chat"))).revision == 7

    asyncio.run(run())
