"""Deployments asked for in Slack: `/ops deploy NAMESPACE/NAME --version V …` and "deploy …" in a thread.

Parses the words into a `DeployRequest` (the same model the CLI and the CI API build), with a usage
line for anything it cannot read. What happens next is `App.deploy`: preflight, then a change request
through policy and approval — the person who asked cannot approve it alone.
"""

from __future__ import annotations

import re
import shlex

from pydantic import ValidationError

from agent.change.deploy import DeployRequest, parse_target

USAGE = ("Usage: `deploy NAMESPACE/NAME --version V [--image IMAGE] [--args \"…\"] [--strategy canary|rolling]` "
         "or `deploy V to NAMESPACE/NAME`")
_NATURAL = re.compile(r"^deploy\s+(?:version\s+)?`?([A-Za-z0-9][-A-Za-z0-9_.]{0,62})`?\s+(?:to|on)\s+"
                      r"`?([a-z0-9][-a-z0-9]*/[a-z0-9][-a-z0-9.]*)`?\s*$", re.I)
_FLAGS = {"--version": "version", "--image": "image", "--args": "args", "--strategy": "strategy",
          "--model": "model", "--container": "container", "--promote-from": "promote_from"}


def parse_deploy(text: str) -> DeployRequest:
    """A DeployRequest from "deploy …" (the leading word optional); ValueError with the usage otherwise."""
    text = text.strip().replace("\u201c", '"').replace("\u201d", '"')
    if m := _NATURAL.match(text if text.lower().startswith("deploy") else f"deploy {text}"):
        ns, name = parse_target(m.group(2))
        return _build({"namespace": ns, "name": name, "version": m.group(1)})
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"{e}. {USAGE}") from e
    if words and words[0].lower() == "deploy":
        words = words[1:]
    if not words:
        raise ValueError(USAGE)
    try:
        ns, name = parse_target(words[0])
    except ValueError as e:
        raise ValueError(f"{e}. {USAGE}") from e
    fields: dict[str, object] = {"namespace": ns, "name": name}
    rest = words[1:]
    while rest:
        flag, *value = rest[0].split("=", 1)
        if flag not in _FLAGS:
            raise ValueError(f"unknown option {flag!r}. {USAGE}")
        if value:
            arg, rest = value[0], rest[1:]
        elif len(rest) > 1:
            arg, rest = rest[1], rest[2:]
        else:
            raise ValueError(f"{flag} needs a value. {USAGE}")
        fields[_FLAGS[flag]] = shlex.split(arg) if flag == "--args" else arg
    return _build(fields)


def _build(fields: dict[str, object]) -> DeployRequest:
    try:
        return DeployRequest.model_validate(fields)
    except ValidationError as e:
        raise ValueError("; ".join(f"{'.'.join(map(str, x['loc'])) or 'request'}: {x['msg']}"
                                   for x in e.errors()) + f". {USAGE}") from e
