"""Triage: an incident in, a report out — the triage graph, its nodes, runbooks, features and reasoners.

Reads only, through the guarded runner. Must not import the change path (`agent.change`), right-sizing,
the composition root or an entry point: a proposal leaves triage as data, never as a call.
"""
