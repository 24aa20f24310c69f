"""A tiny, safe condition language for runbooks: `feature op value [and|or ...]`.

Runbooks are data users edit, so their conditions must never be Python `eval`. A condition
compares named evidence features (`ttft.change_ratio`, `rollout.changed_ago_s`) with numbers,
strings, booleans or other features, joined by `and` / `or` (and binds tighter), with `not`.
Arithmetic is spelled as functions (`ceil(mul(workload.replicas, traffic.change_ratio))`, also
`add`, `sub`, `div`, `max`, `min`, `abs`, `round`) so there is no precedence to get wrong.
A feature that is missing makes its comparison *unknown*, and unknown is neither true nor false:
it is reported so missing evidence is never mistaken for negative evidence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"""\s*(?:(?P<num>-?\d+(?:\.\d+)?(?:e-?\d+)?)|(?P<str>'[^']*'|"[^"]*")|(?P<op>==|!=|>=|<=|>|<)
                        |(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<paren>[()])|(?P<comma>,))""", re.X)

FUNCTIONS: dict[str, Any] = {
    "ceil": lambda x: float(math.ceil(x)), "round": lambda x: float(round(x)), "abs": abs,
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b if b else math.inf, "max": max, "min": min,
}


class ConditionError(ValueError):
    """A condition does not parse; the message shows where."""


@dataclass(frozen=True)
class Result:
    value: bool | None  # None = unknown (a feature it needs is missing)
    missing: tuple[str, ...] = ()


def _tokens(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ConditionError(f"cannot parse condition at {text[pos:pos + 20]!r} in {text!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ConditionError(f"condition ends too early: {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        node = self.or_()
        if self.peek() is not None:
            raise ConditionError(f"unexpected {self.peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return node

    def or_(self) -> Any:
        node = self.and_()
        while self.peek() == ("word", "or"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Any:
        node = self.not_()
        while self.peek() == ("word", "and"):
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Any:
        if self.peek() == ("word", "not"):
            self.take()
            return ("not", self.not_())
        return self.atom()

    def atom(self) -> Any:
        if self.peek() == ("paren", "("):
            self.take()
            node = self.or_()
            if self.take() != ("paren", ")"):
                raise ConditionError(f"missing ')' in {self.text!r}")
            return node
        left = self.operand()
        tok = self.peek()
        if tok and tok[0] == "op":
            op = self.take()[1]
            return ("cmp", op, left, self.operand())
        return ("truthy", left)

    def operand(self) -> Any:
        kind, val = self.take()
        if kind == "num":
            return ("lit", float(val))
        if kind == "str":
            return ("lit", val[1:-1])
        if kind == "word":
            if val in FUNCTIONS and self.peek() == ("paren", "("):
                self.take()
                args = [self.operand()]
                while self.peek() == ("comma", ","):
                    self.take()
                    args.append(self.operand())
                if self.take() != ("paren", ")"):
                    raise ConditionError(f"missing ')' after {val}(...) in {self.text!r}")
                return ("fn", val, *args)
            if val in ("true", "false"):
                return ("lit", val == "true")
            if val in ("and", "or", "not"):
                raise ConditionError(f"expected a value, got {val!r} in {self.text!r}")
            return ("feat", val)
        raise ConditionError(f"expected a value, got {val!r} in {self.text!r}")


def compile_condition(text: str) -> Any:
    """Parse a condition, raising ConditionError (used when runbooks load, so errors surface early)."""
    return _Parser(text).parse()


def compile_value(text: str) -> Any:
    """Parse a value expression (a feature, a literal or a function of them)."""
    p = _Parser(text)
    node = p.operand()
    if p.peek() is not None:
        raise ConditionError(f"unexpected {p.peek()[1]!r} in value {text!r}")  # type: ignore[index]
    return node


def features_named(tree: Any) -> set[str]:
    if tree[0] == "feat":
        return {tree[1]}
    if tree[0] == "lit":
        return set()
    return set().union(*(features_named(t) for t in tree[1:] if isinstance(t, tuple)))


_MISSING = object()


def _value(node: Any, features: Mapping[str, Any], missing: list[str]) -> Any:
    if node[0] == "lit":
        return node[1]
    if node[0] == "fn":
        args = [_value(a, features, missing) for a in node[2:]]
        if any(a is _MISSING for a in args):
            return _MISSING
        try:
            return FUNCTIONS[node[1]](*(float(a) for a in args))
        except (TypeError, ValueError):
            return _MISSING
    v = features.get(node[1], _MISSING)
    if v is _MISSING or v is None:
        missing.append(node[1])
        return _MISSING
    return v


def evaluate_value(tree: Any, features: Mapping[str, Any]) -> Any:
    """Evaluate a value expression; None when a feature it needs is missing."""
    res = _value(tree, features, [])
    return None if res is _MISSING else res


def evaluate(tree: Any, features: Mapping[str, Any]) -> Result:
    missing: list[str] = []

    def ev(node: Any) -> bool | None:
        kind = node[0]
        if kind == "and":
            a, b = ev(node[1]), ev(node[2])
            if a is False or b is False:
                return False
            return None if a is None or b is None else True
        if kind == "or":
            a, b = ev(node[1]), ev(node[2])
            if a is True or b is True:
                return True
            return None if a is None or b is None else False
        if kind == "not":
            a = ev(node[1])
            return None if a is None else not a
        if kind == "truthy":
            v = _value(node[1], features, missing)
            return None if v is _MISSING else bool(v)
        _, op, left, right = node
        lv, rv = _value(left, features, missing), _value(right, features, missing)
        if lv is _MISSING or rv is _MISSING:
            return None
        try:
            if op == "==":
                return bool(lv == rv)
            if op == "!=":
                return bool(lv != rv)
            lf, rf = float(lv), float(rv)
        except (TypeError, ValueError):
            return None
        return {">": lf > rf, "<": lf < rf, ">=": lf >= rf, "<=": lf <= rf}[op]

    value = ev(tree)
    return Result(value, tuple(dict.fromkeys(missing)))
