"""Escaping for the two CloudWatch Logs query languages, so untrusted values stay literal.

Metric dimensions need none (they travel as structured fields). Filter patterns and Logs Insights
queries are text: a value from an alert label must enter them only through these functions.
"""

from __future__ import annotations

import re

_INSIGHTS_FIELD = re.compile(r"^@?[A-Za-z0-9_.]+$")


class QueryTextError(ValueError):
    """A value cannot be expressed safely in this query language."""


def filter_phrase(value: str) -> str:
    """An exact-phrase term for a FilterLogEvents pattern: `"value"`.

    The filter-pattern language has no documented escape for a double quote inside a phrase, so a
    value containing one (or a newline) is refused rather than guessed at.
    """
    if not value or any(c in value for c in '"\n\r'):
        raise QueryTextError(f"cannot use {value!r} as a filter-pattern phrase: empty, or holds a quote or newline")
    return f'"{value}"'


def insights_string(value: str) -> str:
    """A double-quoted Logs Insights string literal holding `value`.

    Logs Insights documents no escape sequences inside string literals, so a value holding a quote, a
    backslash or a newline is refused rather than guessed at.
    """
    if any(c in value for c in '"\\\n\r'):
        raise QueryTextError(f"cannot use {value!r} in a Logs Insights string: it holds a quote, backslash or newline")
    return f'"{value}"'


def insights_field(name: str) -> str:
    """A Logs Insights field reference; names with other characters go in backticks."""
    if _INSIGHTS_FIELD.match(name):
        return name
    if "`" in name or "\n" in name:
        raise QueryTextError(f"cannot reference field {name!r} in Logs Insights")
    return f"`{name}`"
