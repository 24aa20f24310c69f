"""Kubernetes writes: the only tools that mutate a cluster. Used by the guarded executor alone.

Nothing else holds the write identity. Each operation takes the target's expected state
(resourceVersion) as a precondition, so a change approved against one state can never silently land
on another: the API answers 409 and the executor re-reads and re-checks before retrying.
"""
