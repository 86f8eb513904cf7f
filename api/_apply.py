"""Server-side apply: merge a manager's intent into the live object and track field ownership.

Pure functions, no I/O (the server calls them between a Barn read and a CAS write). Ownership is
recorded in ``metadata.managedFields`` as ``[{manager, operation, fields: ["spec.schedule", "metadata.labels[runink.io/app]"]}]``;
a field is a path of mapping keys under ``spec``, ``metadata.labels`` or ``metadata.annotations``.
Lists are atomic (owned and replaced whole), a simplification of Kubernetes' structured merge.

Rules (Kubernetes SSA): applying a field another manager owns with a *different* value is a
Conflict listing fields and managers, unless ``force`` moves ownership; the *same* value makes the
field shared; a field the manager applied before and now omits is removed unless someone else owns it.
A plain update (``operation: Update``) takes ownership of the fields it changed, without conflicts.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from runink.schemas import errors

Path = tuple[str, ...]
Obj = dict[str, Any]

_ROOTS: tuple[Path, ...] = (("spec",), ("metadata", "labels"), ("metadata", "annotations"))
_MISSING = object()


def _leaves(value: Any, prefix: Path) -> dict[Path, Any]:
    if isinstance(value, dict) and value:
        out: dict[Path, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, (*prefix, str(k))))
        return out
    return {prefix: value}


def fields_of(obj: Obj) -> dict[Path, Any]:
    """Every owned leaf path of ``obj`` with its value."""
    out: dict[Path, Any] = {}
    for root in _ROOTS:
        node: Any = obj
        for key in root:
            node = node.get(key, _MISSING) if isinstance(node, dict) else _MISSING
        if node is _MISSING or node is None:
            continue
        if isinstance(node, dict) and not node:
            continue
        out.update(_leaves(node, root))
    return out


def _get(obj: Obj, path: Path) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _set(obj: Obj, path: Path, value: Any) -> None:
    node = obj
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = copy.deepcopy(value)


def _remove(obj: Obj, path: Path) -> None:
    parent = _get(obj, path[:-1])
    if not isinstance(parent, dict):
        return
    parent.pop(path[-1], None)
    # Drop the maps this removal emptied, but keep the top-level ``spec`` / ``metadata``.
    for depth in range(len(path) - 1, 1, -1):
        node = _get(obj, path[:depth])
        if isinstance(node, dict) and not node:
            holder = _get(obj, path[: depth - 1])
            if isinstance(holder, dict):
                holder.pop(path[depth - 1], None)


_SEGMENT = re.compile(r"\[([^\]]*)\]|\.?([^.\[]+)")


def path_str(path: Path) -> str:
    """``("metadata", "labels", "runink.io/app")`` -> ``metadata.labels[runink.io/app]``."""
    out = ""
    for seg in path:
        if "." in seg or "[" in seg or not seg:
            out += f"[{seg}]"
        else:
            out += f".{seg}" if out else seg
    return out


def parse_path(text: str) -> Path:
    return tuple(
        m.group(1) if m.group(1) is not None else m.group(2) for m in _SEGMENT.finditer(text)
    )


def managed(obj: Obj) -> dict[str, tuple[str, set[Path]]]:
    """``{manager: (operation, fields)}`` from ``metadata.managedFields``."""
    out: dict[str, tuple[str, set[Path]]] = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        fields = {parse_path(str(f)) for f in entry.get("fields") or []}
        out[str(entry.get("manager"))] = (str(entry.get("operation", "Apply")), fields)
    return out


def _encode(owners: dict[str, tuple[str, set[Path]]]) -> list[Obj]:
    return [
        {"manager": m, "operation": op, "fields": [path_str(p) for p in sorted(fs)]}
        for m, (op, fs) in sorted(owners.items())
        if fs
    ]


def _owns(fields: set[Path], path: Path) -> bool:
    """A manager owns ``path`` if it owns it, a prefix of it (an atomic parent) or a child of it."""
    return any(f[: len(path)] == path or path[: len(f)] == f for f in fields)


def apply(live: Obj | None, intent: Obj, manager: str, *, force: bool = False) -> Obj:
    """The object after ``manager`` applies ``intent`` to ``live`` (``None``: create).

    Raises ``Conflict`` (details: ``conflicts: [{field, manager}]``) when ``intent`` changes a
    field another manager owns and ``force`` is false.
    """
    wanted = fields_of(intent)
    if live is None:
        result = copy.deepcopy(intent)
        result.setdefault("metadata", {})["managedFields"] = _encode(
            {manager: ("Apply", set(wanted))}
        )
        return result

    owners = managed(live)
    conflicts: list[tuple[Path, str]] = []
    for path, value in wanted.items():
        current = _get(live, path)
        if current is _MISSING or current == value:
            continue
        for other, (_, fields) in owners.items():
            if other != manager and _owns(fields, path):
                conflicts.append((path, other))
    if conflicts and not force:
        listing = ", ".join(f"{'.'.join(p)} (owned by {m})" for p, m in conflicts)
        raise errors.Conflict(
            f"apply conflicts with other field managers: {listing}; "
            "re-run with --force-conflicts to take ownership",
            details={"conflicts": [{"field": ".".join(p), "manager": m} for p, m in conflicts]},
        )
    result = copy.deepcopy(live)
    # Values changed by force leave their previous owners.
    for path, other in conflicts:
        op, fields = owners[other]
        owners[other] = (
            op,
            {f for f in fields if not (f[: len(path)] == path or path[: len(f)] == f)},
        )
    previous = owners.get(manager, ("Apply", set()))[1]
    others: set[Path] = set()
    for other, (_, fields) in owners.items():
        if other != manager:
            others |= fields
    for path in previous - set(wanted):
        if not _owns(others, path):
            _remove(result, path)
    for path, value in wanted.items():
        _set(result, path, value)
    owners[manager] = ("Apply", set(wanted))
    result.setdefault("metadata", {})["managedFields"] = _encode(owners)
    return result


def record_update(old: Obj | None, new: Obj, manager: str) -> list[Obj]:
    """``managedFields`` after a plain update by ``manager``: it takes the fields it changed."""
    before = fields_of(old) if old is not None else {}
    after = fields_of(new)
    changed = {p for p, v in after.items() if before.get(p, _MISSING) != v}
    owners = managed(old) if old is not None else {}
    for other, (op, fields) in list(owners.items()):
        # Fields that no longer exist, or that this update changed, leave other managers.
        kept = {f for f in fields if other == manager or (f in after or _owns(set(after), f))}
        if other != manager:
            kept = {f for f in kept if not _owns(changed, f)}
        owners[other] = (op, kept)
    op, mine = owners.get(manager, ("Update", set()))
    owners[manager] = (op, {f for f in mine if f in after} | changed)
    return _encode(owners)


__all__ = ["apply", "fields_of", "managed", "record_update"]
