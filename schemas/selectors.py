"""Label selectors: Kubernetes syntax parsed into a pure, frozen value.

Used by the store (list/watch filtering), the scheduler (nodeSelector) and the CLI (``-l``).
Grammar, comma meaning AND::

    a=b  a==b  a!=b  env in (x,y)  tier notin (z)  key  !key

Pure functions only: no I/O, no asyncio (import-linter checks this for runink.schemas).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from runink.schemas import errors

Operator = Literal["=", "!=", "in", "notin", "exists", "!exists"]

# A label key: optional DNS-subdomain prefix + "/" + a name of at most 63 characters.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
# A label value may be empty; otherwise the same shape as a name.
_VALUE_RE = re.compile(rf"^({_NAME})?$")

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<lparen>\()|(?P<rparen>\))|(?P<comma>,)|(?P<op>==|!=|=|!)"
    r"|(?P<word>[^\s(),=!]+))"
)


@dataclass(frozen=True, slots=True)
class Requirement:
    """One clause of a selector: ``key <operator> values``."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!exists":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects that lack the key, as in Kubernetes.
        return not present or labels[self.key] not in self.values

    def __str__(self) -> str:
        vals = sorted(self.values)
        if self.operator == "exists":
            return self.key
        if self.operator == "!exists":
            return f"!{self.key}"
        if self.operator in ("=", "!="):
            return f"{self.key}{self.operator}{vals[0]}"
        return f"{self.key} {self.operator} ({','.join(vals)})"


@dataclass(frozen=True, slots=True)
class Selector:
    """A conjunction of requirements; the empty selector matches every object."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the selector has no requirement and so matches everything."""
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(expr, pos)
        if (
            m is None or m.lastgroup is None
        ):  # pragma: no cover - the word class accepts anything else
            raise _bad(expr, expr[pos:].strip(), "unexpected character")
        tokens.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return tokens


def _bad(expr: str, token: str, why: str) -> errors.Invalid:
    return errors.Invalid(
        f"invalid label selector {expr!r}",
        errors=[errors.FieldError(path="labelSelector", message=f"{why} at {token!r}")],
    )


def _check_key(expr: str, key: str) -> str:
    if not _KEY_RE.match(key):
        raise _bad(expr, key, "invalid label key")
    return key


def _check_value(expr: str, value: str) -> str:
    if not _VALUE_RE.match(value):
        raise _bad(expr, value, "invalid label value")
    return value


def parse_selector(expr: str) -> Selector:
    """Parse a selector expression; raises ``errors.Invalid`` naming the offending token."""
    tokens = _tokenize(expr)
    reqs: list[Requirement] = []
    i = 0

    def peek(k: int = 0) -> tuple[str, str] | None:
        return tokens[i + k] if i + k < len(tokens) else None

    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "op" and text == "!":
            nxt = peek(1)
            if nxt is None or nxt[0] != "word":
                raise _bad(expr, text, "'!' must be followed by a label key")
            reqs.append(Requirement(_check_key(expr, nxt[1]), "!exists"))
            i += 2
        elif kind == "word":
            key = _check_key(expr, text)
            nxt = peek(1)
            if nxt is None or nxt[0] == "comma":
                reqs.append(Requirement(key, "exists"))
                i += 1
            elif nxt[0] == "op" and nxt[1] in ("=", "==", "!="):
                val = peek(2)
                # "a=" (empty value) is legal in Kubernetes and means the value "".
                if val is None or val[0] == "comma":
                    value = ""
                    i += 2
                elif val[0] == "word":
                    value = _check_value(expr, val[1])
                    i += 3
                else:
                    raise _bad(expr, val[1], "expected a label value")
                op: Operator = "!=" if nxt[1] == "!=" else "="
                reqs.append(Requirement(key, op, frozenset({value})))
            elif nxt[0] == "word" and nxt[1] in ("in", "notin"):
                set_op: Operator = "in" if nxt[1] == "in" else "notin"
                lp = peek(2)
                if lp is None or lp[0] != "lparen":
                    raise _bad(expr, lp[1] if lp else nxt[1], f"expected '(' after {nxt[1]!r}")
                i += 3
                values: list[str] = []
                expect_value = True
                while True:
                    tok = peek()
                    if tok is None:
                        raise _bad(expr, "(", "unclosed '('")
                    if tok[0] == "rparen":
                        i += 1
                        break
                    if expect_value and tok[0] == "word":
                        values.append(_check_value(expr, tok[1]))
                        expect_value = False
                    elif not expect_value and tok[0] == "comma":
                        expect_value = True
                    else:
                        raise _bad(expr, tok[1], "expected a value list like (a,b)")
                    i += 1
                if not values:
                    raise _bad(expr, f"{key} {nxt[1]} ()", "empty value set")
                reqs.append(Requirement(key, set_op, frozenset(values)))
            else:
                raise _bad(expr, nxt[1], f"unexpected token after key {key!r}")
        else:
            raise _bad(expr, text, "expected a label key")
        # Between requirements there must be a comma (or the end).
        if i < len(tokens):
            kind, text = tokens[i]
            if kind != "comma":
                raise _bad(expr, text, "expected ',' between requirements")
            i += 1
            if i == len(tokens):
                raise _bad(expr, ",", "trailing ','")
    return Selector(tuple(reqs))


def valid_label_key(key: str) -> bool:
    """Whether ``key`` is a valid label key (optional DNS prefix + '/' + name of <= 63 chars)."""
    return bool(_KEY_RE.match(key))


def valid_label_value(value: str) -> bool:
    """Whether ``value`` is a valid label value (empty, or a name of <= 63 chars)."""
    return bool(_VALUE_RE.match(value))


def matches(expr: str | None, labels: Mapping[str, str] | None) -> bool:
    """Whether ``labels`` satisfy the selector ``expr``; ``None`` or ``""`` match everything."""
    if not expr or not expr.strip():
        return True
    return parse_selector(expr).matches(labels or {})


__all__ = [
    "Operator",
    "Requirement",
    "Selector",
    "matches",
    "parse_selector",
    "valid_label_key",
    "valid_label_value",
]
