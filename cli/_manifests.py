"""Reading manifests for apply/delete/diff: ``-f file|dir|-``, ``-R``, validated whole before use.

Every file is parsed and validated (runink.schemas.parse_manifests) before the caller writes
anything, so a broken document anywhere means nothing is stored; the ``Invalid`` raised lists
file, document, line and field path of every problem found in every file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runink import schemas
from runink.schemas import errors

_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class Item:
    """One manifest as written (``obj``: intent, not defaulted) and its kind."""

    obj: dict[str, Any]
    info: schemas.KindInfo
    source: str


def _files(path: str, recursive: bool) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        # Directories are read recursively (-R is accepted for kubectl habits): `runink apply -f
        # manifests/` must find manifests/examples/*.yaml.
        pattern = "**/*"
        return sorted(f for f in p.glob(pattern) if f.is_file() and f.suffix in _SUFFIXES)
    if not p.exists():
        raise errors.NotFound(f"{path}: no such file or directory")
    return [p]


def load(paths: list[str], *, recursive: bool, herd: str) -> list[Item]:
    """All manifests under ``paths`` (``-`` is stdin), herd filled in for herd-scoped kinds."""
    problems: list[errors.FieldError] = []
    items: list[Item] = []
    for path in paths:
        sources = (
            [("<stdin>", sys.stdin.read())]
            if path == "-"
            else [(str(f), f.read_text()) for f in _files(path, recursive)]
        )
        for name, text in sources:
            try:
                manifests = schemas.parse_manifests(text, name)
            except errors.Invalid as e:
                problems.extend(e.errors or [errors.FieldError("", e.message, file=name)])
                continue
            for m in manifests:
                obj = dict(m.document.data)
                meta = dict(obj.get("metadata") or {})
                if m.info.namespaced and not meta.get("herd"):
                    meta["herd"] = herd
                obj["metadata"] = meta
                items.append(Item(obj=obj, info=m.info, source=name))
    if problems:
        raise errors.Invalid("invalid manifests; nothing was applied", errors=problems)
    # Herds (and other cluster-scoped kinds) first, so herd-scoped objects find their herd.
    items.sort(key=lambda i: (i.info.namespaced, i.info.kind != "Herd"))
    return items


__all__ = ["Item", "load"]
