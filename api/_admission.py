"""The admission chain: what every write goes through between authorization and the Barn.

Order (Kubernetes'): resolve the kind, protect server-owned metadata, check the herd rules (set for
namespaced kinds, absent for cluster-scoped ones), defaults + schema validation via
``runink.schemas.validate`` (Invalid with field paths), then the herd-exists check that needs a
read. Pure except for that read, which goes through a tiny ``Reader`` Protocol so tests can drive
it with any Barn. Admission runs identically for dry-run and real writes.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

from runink import schemas
from runink.schemas import errors, registry

Obj = dict[str, Any]

# The server sets these; a client may send them back (GET, edit, apply) but never changes them.
SERVER_OWNED = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "managedFields")


class Reader(Protocol):
    async def get(
        self, kind: str, name: str, herd: str | None = None, *, linearizable: bool = False
    ) -> Obj: ...


def resolve(kind: str) -> registry.KindInfo:
    """The registry entry for a kind, plural or short name (Invalid naming the field if unknown)."""
    try:
        return registry.lookup(kind)
    except errors.Invalid as e:
        raise errors.Invalid(e.message, errors=[errors.FieldError("kind", e.message)]) from None


def _check_shape(obj: Obj) -> tuple[registry.KindInfo, Obj]:
    if not isinstance(obj, dict):
        raise errors.Invalid("an object must be a mapping")
    info = resolve(str(obj.get("kind", "")))
    obj = copy.deepcopy(obj)
    obj["kind"] = info.kind
    obj.setdefault("apiVersion", info.api_version)
    if obj["apiVersion"] != info.api_version:
        raise errors.Invalid(
            f"{info.kind} is served as apiVersion {info.api_version}, not {obj['apiVersion']}",
            errors=[errors.FieldError("apiVersion", f"must be {info.api_version}")],
        )
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise errors.Invalid(
            f"{info.kind} has no metadata.name",
            errors=[errors.FieldError("metadata.name", "required")],
        )
    if info.namespaced and not meta.get("herd"):
        raise errors.Invalid(
            f"{info.kind} {meta['name']} needs a herd (metadata.herd or -n HERD)",
            errors=[errors.FieldError("metadata.herd", "required for a herd-scoped kind")],
        )
    if not info.namespaced and meta.get("herd"):
        raise errors.Invalid(
            f"{info.kind} is cluster-scoped: remove metadata.herd",
            errors=[errors.FieldError("metadata.herd", "not allowed on a cluster-scoped kind")],
        )
    return info, obj


def _validate(obj: Obj) -> Obj:
    """Defaults and schema validation; the server-owned metadata is carried through untouched."""
    normalized: Obj = schemas.validate(obj)
    return normalized


async def _check_herd(reader: Reader, info: registry.KindInfo, obj: Obj) -> None:
    if not info.namespaced:
        return
    herd = obj["metadata"]["herd"]
    try:
        await reader.get("Herd", herd)
    except errors.NotFound:
        raise errors.NotFound(
            f"herd {herd!r} does not exist: create it first (kind: Herd, name: {herd})",
            details={"herd": herd},
        ) from None


async def admit_create(reader: Reader, obj: Obj) -> Obj:
    """The object as it will be created: server-owned fields dropped, defaulted, validated."""
    info, obj = _check_shape(obj)
    meta = obj["metadata"]
    managed = meta.get("managedFields")
    for key in (*SERVER_OWNED, "resourceVersion"):
        meta.pop(key, None)
    # Status has its own write path (update_status), as in Kubernetes' status subresource.
    obj.pop("status", None)
    obj = _validate(obj)
    if managed is not None:
        # managedFields are computed by the server itself (apply / update bookkeeping).
        obj["metadata"]["managedFields"] = managed
    await _check_herd(reader, info, obj)
    return obj


async def admit_update(reader: Reader, obj: Obj, live: Obj) -> Obj:
    """The object as it will be written over ``live``: server-owned fields kept from ``live``."""
    info, obj = _check_shape(obj)
    meta = obj["metadata"]
    live_meta = live.get("metadata") or {}
    uid = meta.get("uid")
    if uid and uid != live_meta.get("uid"):
        raise errors.Conflict(
            f"uid {uid} names an object that no longer exists",
            details={"currentResourceVersion": live_meta.get("resourceVersion")},
        )
    managed = meta.get("managedFields")
    for key in SERVER_OWNED:
        meta.pop(key, None)
        if key in live_meta and key != "managedFields":
            meta[key] = copy.deepcopy(live_meta[key])
    obj.pop("status", None)
    obj = _validate(obj)
    obj["metadata"]["managedFields"] = (
        managed if managed is not None else live_meta.get("managedFields", [])
    )
    if not obj["metadata"]["managedFields"]:
        obj["metadata"].pop("managedFields")
    await _check_herd(reader, info, obj)
    return obj


def admit_status(obj: Obj) -> tuple[registry.KindInfo, Obj]:
    """A status write: the kind and identity are checked; only ``status`` will be stored."""
    return _check_shape(obj)


__all__ = ["SERVER_OWNED", "Reader", "admit_create", "admit_status", "admit_update", "resolve"]
