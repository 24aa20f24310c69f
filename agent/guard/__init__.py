"""The guarded runner (the one door every tool call goes through) and redaction.

Imports only audit and storage below it (and `tools`): never triage, the change path or the policy.
"""
