"""How the CLI prints: tables, -o formats, ages, and where errors go.

Output is a product (STYLE.md 13): a rich table on a terminal, aligned plain text when piped (so
``grep``/``awk`` work), ``-o json|yaml|name|wide|jsonpath=`` for scripts; rich honours NO_COLOR.
Everything goes through a ``Streams`` pair of rich Consoles so tests render to strings.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from runink import schemas
from runink.cli import _jsonpath

Obj = dict[str, Any]


@dataclass
class Streams:
    out: Console
    err: Console

    @classmethod
    def default(cls) -> Streams:
        return cls(
            out=Console(file=sys.stdout, highlight=False, soft_wrap=True),
            err=Console(file=sys.stderr, highlight=False, soft_wrap=True),
        )

    def write(self, text: str) -> None:
        """Raw text to stdout, exactly as given (no markup, no wrapping)."""
        self.out.file.write(text)
        self.out.file.flush()

    def error(self, text: str) -> None:
        self.err.file.write(f"error: {text}\n" if not text.startswith("error") else text + "\n")
        self.err.file.flush()


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "d" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(obj: Obj, column: schemas.Column) -> str:
    values = _jsonpath.find(obj, column.json_path.strip().strip("{}"))
    value = values[0] if values else None
    if column.format == "count":
        return str(len(value)) if isinstance(value, (list, dict)) else "0"
    if value in (None, ""):
        return "<none>"
    if column.format == "age":
        return age(str(value))
    if column.format == "duration":
        end = _jsonpath.find(obj, column.end_json_path or "") if column.end_json_path else []
        stop = _parse(str(end[0])) if end and end[0] else None
        return age(str(value), stop)
    if isinstance(value, list) or column.format == "join":
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if column.format == "bytes" and isinstance(value, int):
        return human_bytes(value)
    return str(value)


def human_bytes(n: int) -> str:
    """A byte count as a binary quantity: ``25276063744`` -> ``23.5Gi`` (exact below 1 Ki)."""
    for suffix, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= size:
            text = f"{n / size:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return str(n)


def _parse(ts: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def rows_for(
    info: schemas.KindInfo,
    items: Sequence[Obj],
    *,
    wide: bool,
    all_herds: bool,
    show_labels: bool,
) -> tuple[list[str], list[list[str]]]:
    columns = [c for c in info.columns if wide or not c.wide_only]
    if not any(c.header == "NAME" for c in columns):
        columns.insert(0, schemas.Column("NAME", ".metadata.name"))
    headers = [c.header for c in columns]
    if all_herds and info.namespaced:
        headers.insert(0, "HERD")
    if show_labels:
        headers.append("LABELS")
    rows: list[list[str]] = []
    for obj in items:
        meta = obj.get("metadata") or {}
        row = [_cell(obj, c) for c in columns]
        if all_herds and info.namespaced:
            row.insert(0, str(meta.get("herd", "")))
        if show_labels:
            labels = meta.get("labels") or {}
            row.append(",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>")
        rows.append(row)
    return headers, rows


def plain_table(headers: list[str], rows: list[list[str]], *, header: bool = True) -> str:
    all_rows = ([headers] if header else []) + rows
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in all_rows
    ]
    return "".join(line + "\n" for line in lines)


def print_table(streams: Streams, headers: list[str], rows: list[list[str]]) -> None:
    if streams.out.is_terminal:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for h in headers:
            table.add_column(h, no_wrap=True)
        for row in rows:
            table.add_row(*row)
        streams.out.print(table)
    else:
        streams.write(plain_table(headers, rows))


def name_of(obj: Obj) -> str:
    try:
        plural = schemas.lookup(str(obj.get("kind", ""))).singular
    except schemas.errors.Invalid:
        plural = str(obj.get("kind", "")).lower()
    return f"{plural}/{(obj.get('metadata') or {}).get('name', '')}"


def render(objs: list[Obj], output: str, *, single: bool) -> str:
    """``-o json|yaml|name|jsonpath=...`` of one object (``single``) or a list."""
    if output == "json":
        doc: Any = (
            objs[0] if single else {"apiVersion": "runink.io/v1", "kind": "List", "items": objs}
        )
        return json.dumps(doc, indent=2) + "\n"
    if output == "yaml":
        doc = objs[0] if single else {"apiVersion": "runink.io/v1", "kind": "List", "items": objs}
        return str(schemas.dump_yaml(doc))
    if output == "name":
        return "".join(name_of(o) + "\n" for o in objs)
    if output.startswith("jsonpath="):
        template = output[len("jsonpath=") :]
        data: Any = objs[0] if single else {"kind": "List", "items": objs}
        return _jsonpath.render(template, data)
    raise schemas.errors.Invalid(
        f"unknown output format {output!r}: use table, wide, yaml, json, name or jsonpath=..."
    )


__all__ = ["Streams", "age", "name_of", "plain_table", "print_table", "render", "rows_for"]
