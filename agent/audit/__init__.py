"""The audit trail: typed events (`events`) and the hash-chained, append-only log (`log`).

Audit is not logging. Imports only storage below it.
"""
