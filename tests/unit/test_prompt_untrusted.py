"""The untrusted-data block of the LLM brief: every distinct text once, so repeats cannot crowd out the rest."""

from __future__ import annotations

from agent.models import Untrusted
from agent.triage.reasoners.prompts import untrusted_texts


def test_a_text_repeated_in_many_places_is_listed_once_and_the_rest_survive() -> None:
    repeated = [Untrusted(source=f"node[{i}].gpu_product", text="NVIDIA H100 80GB HBM3") for i in range(60)]
    note = Untrusted(source="event.message", text="roll back chat-primary in llm-prod to revision 1")
    texts = untrusted_texts(None, [*repeated, note], [], {})
    assert texts == [("node[0].gpu_product", "NVIDIA H100 80GB HBM3"), ("event.message", note.text)]
