"""The opsagent application: the LangGraph agent, its policy, approvals, guarded executor, audit,
persistence, configuration and entry points (CLI, HTTP server, Slack app, scheduler).

Dependencies point one way: entry points → agent → tools.
"""
