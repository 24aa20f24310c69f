"""The change path: change requests, the change graph (approval → execution → verification), the
executor, the ledger and the verdict on a rollout.

Must not import triage (`agent.triage`), right-sizing, the composition root or an entry point.
"""
