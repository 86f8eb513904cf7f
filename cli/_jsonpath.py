"""A kubectl-compatible subset of JSONPath templates, for ``-o jsonpath=`` and ``wait --for=jsonpath``.

Supported: literal text, filters ``[?type=Ready]`` / ``[?(@.type=="Ready")]``, ``{.a.b}``, ``{.items[0]}``, ``{.items[*].metadata.name}`` (values joined
by spaces), ``{.metadata.labels.runink\\.io/app}`` (escaped dots), ``{range .items[*]}...{end}``
and the escapes ``\\n`` / ``\\t`` in literals. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

from runink.schemas import errors

_TOKEN = re.compile(r"\{((?:[^{}\"]|\"[^\"]*\")*)\}")
_STEP = re.compile(
    r"\.((?:\\\.|[^.\[])+)|\[(\*|-?\d+|'[^']*'|\"[^\"]*\")\]|\[\?\(?@?\.?([\w.-]+)\s*==?\s*['\"]?([^'\"\])]*)['\"]?\)?\]"
)
Step = str | int | None | tuple[str, str]


def _steps(expr: str) -> list[Step]:
    expr = expr.strip()
    if expr in ("", ".", "@", "$"):
        return []
    if expr.startswith("$"):
        expr = expr[1:]
    if expr.startswith("@"):
        expr = expr[1:]
    if not expr.startswith((".", "[")):
        expr = "." + expr
    out: list[Step] = []
    pos = 0
    for m in _STEP.finditer(expr):
        if m.start() != pos:
            raise errors.Invalid(f"cannot parse JSONPath {expr!r} at {expr[pos:]!r}")
        pos = m.end()
        if m.group(1) is not None:
            out.append(m.group(1).replace("\\.", "."))
        elif m.group(3) is not None:
            out.append((m.group(3), m.group(4)))
        else:
            idx = m.group(2)
            if idx == "*":
                out.append(None)
            elif idx[0] in "'\"":
                out.append(idx[1:-1])
            else:
                out.append(int(idx))
    if pos != len(expr):
        raise errors.Invalid(f"cannot parse JSONPath {expr!r} at {expr[pos:]!r}")
    return out


def find(data: Any, expr: str) -> list[Any]:
    """Every value ``expr`` selects in ``data`` (empty when a key is missing)."""
    current = [data]
    for step in _steps(expr):
        nxt: list[Any] = []
        for value in current:
            if isinstance(step, tuple):
                key, want = step
                if isinstance(value, list):
                    nxt.extend(v for v in value if isinstance(v, dict) and str(v.get(key)) == want)
            elif step is None:
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value.values())
            elif isinstance(step, int):
                if isinstance(value, list) and -len(value) <= step < len(value):
                    nxt.append(value[step])
            elif isinstance(value, dict) and step in value:
                nxt.append(value[step])
        current = nxt
    return current


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _literal(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def render(template: str, data: Any) -> str:
    """Render a template such as ``{.metadata.name}`` or ``{range .items[*]}{.x}{"\\n"}{end}``."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        if m.start() > pos:
            parts.append(("lit", template[pos : m.start()]))
        parts.append(("expr", m.group(1).strip()))
        pos = m.end()
    if pos < len(template):
        parts.append(("lit", template[pos:]))
    out, rest = _render(parts, data)
    if rest:
        raise errors.Invalid(f"JSONPath template {template!r} has an unmatched {{end}}")
    return out


def _render(parts: list[tuple[str, str]], data: Any) -> tuple[str, list[tuple[str, str]]]:
    out: list[str] = []
    while parts:
        kind, text = parts[0]
        parts = parts[1:]
        if kind == "lit":
            out.append(_literal(text))
        elif text == "end":
            return "".join(out), [(kind, text), *parts]
        elif text.startswith("range "):
            body_end = _matching_end(parts)
            body = parts[:body_end]
            for item in find(data, text[len("range ") :]):
                rendered, _ = _render(list(body), item)
                out.append(rendered)
            parts = parts[body_end + 1 :]
        elif text.startswith('"') and text.endswith('"'):
            out.append(_literal(text[1:-1]))
        else:
            out.append(" ".join(_text(v) for v in find(data, text)))
    return "".join(out), []


def _matching_end(parts: list[tuple[str, str]]) -> int:
    depth = 0
    for i, (kind, text) in enumerate(parts):
        if kind != "expr":
            continue
        if text.startswith("range "):
            depth += 1
        elif text == "end":
            if depth == 0:
                return i
            depth -= 1
    raise errors.Invalid("JSONPath {range} without {end}")


__all__ = ["find", "render"]
