"""Reasoners turn evidence into ranked hypotheses: `rules` (deterministic, default) and `llm`."""
