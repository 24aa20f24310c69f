"""The triage graph's nodes: one module each, each a function `(state, runtime) -> partial update`."""
