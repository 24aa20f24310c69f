"""The Slack app manifest grants exactly the scopes the code needs: no missing one, no spare one.

The Web API methods, events and slash commands are read from the code (an AST walk over
agent/entry/slack), not listed by hand, so a new `chat.*` call or event listener without its scope
fails here before an install fails in a workspace.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SLACK_CODE = ROOT / "agent" / "entry" / "slack"
MANIFEST = ROOT / "deploy" / "slack" / "manifest.yaml"

# Bot scope each Web API method needs (from each method's page on api.slack.com/methods); an empty
# set is a method any token may call. A method the code calls that is missing here fails the test.
METHOD_SCOPES: dict[str, set[str]] = {
    "auth.test": set(),
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "chat.delete": {"chat:write"},
    "reactions.add": {"reactions:write"},
    "conversations.history": {"channels:history"},
    "conversations.replies": {"channels:history"},
    "users.info": {"users:read"},
    "views.open": set(),
}
# Bolt event listener → the manifest's bot events and the scope each needs (api.slack.com/events).
EVENT_SUBSCRIPTIONS: dict[str, dict[str, str]] = {
    "app_mention": {"app_mention": "app_mentions:read"},
    "message": {"message.channels": "channels:history", "message.groups": "groups:history"},
}
SLACK_METHOD_PREFIXES = ("auth", "chat", "conversations", "reactions", "users", "views", "files", "pins")


def _code_usage() -> tuple[set[str], set[str], set[str], bool]:
    """(Web API methods, Bolt events, slash commands, any button action) used in agent/entry/slack."""
    methods: set[str] = set()
    events: set[str] = set()
    commands: set[str] = set()
    actions = False
    for path in sorted(SLACK_CODE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            # bolt.event("x")(handler), bolt.command("/x")(handler), bolt.action(ID)(handler)
            if isinstance(func, ast.Call) and isinstance(func.func, ast.Attribute):
                kind = func.func.attr
                arg = func.args[0] if func.args else None
                if kind == "event" and isinstance(arg, ast.Constant):
                    events.add(str(arg.value))
                elif kind == "command" and isinstance(arg, ast.Constant):
                    commands.add(str(arg.value))
                elif kind == "action":
                    actions = True
                continue
            if not isinstance(func, ast.Attribute):
                continue
            first = node.args[0] if node.args else None
            # self.call("chat.update", ...) and client.api_call("chat.postMessage", ...)
            # (a tool name such as "prometheus_query_range" given to the guarded runner has no dot)
            if func.attr in ("call", "api_call") and isinstance(first, ast.Constant) \
                    and isinstance(first.value, str) and "." in first.value:
                methods.add(first.value)
            # client.chat_postMessage(...), client.auth_test()
            elif func.attr.split("_", 1)[0] in SLACK_METHOD_PREFIXES and "_" in func.attr \
                    and isinstance(func.value, ast.Attribute | ast.Name) \
                    and (getattr(func.value, "attr", None) or getattr(func.value, "id", "")).endswith("client"):
                methods.add(func.attr.replace("_", ".", 1))
    return methods, events, commands, actions


def _manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_the_walk_finds_the_calls_we_know_about() -> None:
    # Guards the walk itself: if a refactor hid these calls from it, the scope test would pass vacuously.
    methods, events, commands, actions = _code_usage()
    assert {"chat.postMessage", "chat.update", "auth.test"} <= methods
    assert {"app_mention", "message"} <= events and commands == {"/ops"} and actions


def test_the_bot_scopes_are_exactly_what_the_code_uses() -> None:
    methods, events, commands, _ = _code_usage()
    unknown = methods - METHOD_SCOPES.keys()
    assert not unknown, f"add these Web API methods and their scopes to METHOD_SCOPES: {sorted(unknown)}"
    needed = set().union(*(METHOD_SCOPES[m] for m in methods))
    for ev in events:
        needed |= set(EVENT_SUBSCRIPTIONS[ev].values())
    if commands:
        needed.add("commands")
    granted = set(_manifest()["oauth_config"]["scopes"]["bot"])
    assert not needed - granted, f"the manifest lacks scopes the code needs: {sorted(needed - granted)}"
    assert not granted - needed, f"the manifest grants scopes nothing uses: {sorted(granted - needed)}"


def test_events_commands_and_urls_match_the_server() -> None:
    _, events, commands, actions = _code_usage()
    m = _manifest()
    wanted_events = {e for ev in events for e in EVENT_SUBSCRIPTIONS[ev]}
    assert set(m["settings"]["event_subscriptions"]["bot_events"]) == wanted_events
    assert {c["command"] for c in m["features"]["slash_commands"]} == commands
    assert m["settings"]["interactivity"]["is_enabled"] is actions
    # The server's routes (agent/entry/slack/service.py) are where Slack must send each request.
    service = (SLACK_CODE / "service.py").read_text() + (SLACK_CODE / "app.py").read_text()
    urls = [m["settings"]["event_subscriptions"]["request_url"], m["settings"]["interactivity"]["request_url"],
            *(c["url"] for c in m["features"]["slash_commands"])]
    for url in urls:
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        assert path in service, f"{url}: the server serves no {path}"
