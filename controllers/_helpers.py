"""Helpers every reconciler needs: owner references, finalizers, conditions and Events.

Finalizer edits are compare-and-swap loops (re-read on ``Conflict``), so two controllers adding
their own finalizers concurrently never lose one. ``set_condition`` moves ``lastTransitionTime``
only when the condition's status changes (Kubernetes' ``meta.SetStatusCondition``). The
:class:`EventRecorder` writes kind ``Event`` objects for ``runink describe`` and folds repeats of the
same (object, type, reason, message) into one Event with a growing ``count``.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from typing import Any, Literal

from runink.controllers import _client, _clock, _types
from runink.schemas import errors

log = logging.getLogger("runink.controllers")

Obj = dict[str, Any]
EventType = Literal["Normal", "Warning"]
API_VERSION = "runink.io/v1"


def _meta(obj: Obj) -> dict[str, Any]:
    meta: dict[str, Any] = obj.setdefault("metadata", {})
    return meta


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- owner references ---------------------------------------------------------------------------


def owner_reference(
    owner: Obj, *, controller: bool = True, block_owner_deletion: bool = True
) -> Obj:
    meta = owner.get("metadata") or {}
    if not meta.get("uid"):
        raise errors.Invalid(f"{_types.Request.of(owner)} has no uid yet: create it first")
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": block_owner_deletion,
    }


def set_controller_reference(owner: Obj, child: Obj) -> Obj:
    """Make ``owner`` the controller of ``child`` (in place; returns ``child``).

    Raises ``Conflict`` if another object already controls the child. Owners must be in the child's
    herd or cluster-scoped.
    """
    ref = owner_reference(owner)
    owner_herd = (owner.get("metadata") or {}).get("herd")
    if owner_herd is not None and owner_herd != _meta(child).get("herd"):
        raise errors.Invalid(
            f"an owner in herd {owner_herd!r} cannot own an object in another herd"
        )
    refs: list[Obj] = list(_meta(child).get("ownerReferences") or [])
    for i, existing in enumerate(refs):
        if existing.get("uid") == ref["uid"]:
            refs[i] = ref
            break
        if existing.get("controller"):
            raise errors.Conflict(
                f"{_types.Request.of(child)} is already controlled by "
                f"{existing.get('kind')}/{existing.get('name')}"
            )
    else:
        refs.append(ref)
    _meta(child)["ownerReferences"] = refs
    return child


def is_controlled_by(child: Obj, owner: Obj) -> bool:
    uid = (owner.get("metadata") or {}).get("uid")
    return any(
        r.get("controller") and r.get("uid") == uid
        for r in (child.get("metadata") or {}).get("ownerReferences") or []
    )


# -- finalizers ---------------------------------------------------------------------------------


def has_finalizer(obj: Obj, finalizer: str) -> bool:
    return finalizer in ((obj.get("metadata") or {}).get("finalizers") or [])


async def add_finalizer(
    client: _client.Client, obj: Obj, finalizer: str, *, attempts: int = 10
) -> Obj:
    """Add ``finalizer`` to the stored object (no-op if present or being deleted); CAS with retry."""
    return await _edit_finalizers(client, obj, finalizer, add=True, attempts=attempts)


async def remove_finalizer(
    client: _client.Client, obj: Obj, finalizer: str, *, attempts: int = 10
) -> Obj | None:
    """Remove ``finalizer``; returns the object, or ``None`` if that removal deleted it (or it is gone)."""
    try:
        return await _edit_finalizers(client, obj, finalizer, add=False, attempts=attempts)
    except errors.NotFound:
        return None


async def _edit_finalizers(
    client: _client.Client, obj: Obj, finalizer: str, *, add: bool, attempts: int
) -> Obj:
    req = _types.Request.of(obj)
    current = obj
    for _ in range(attempts):
        meta = current.get("metadata") or {}
        fins: list[str] = list(meta.get("finalizers") or [])
        if add == (finalizer in fins):
            return current
        if add and meta.get("deletionTimestamp"):
            return current  # never add a finalizer to an object on its way out
        new = {
            **current,
            "metadata": {
                **meta,
                "finalizers": [*fins, finalizer] if add else [f for f in fins if f != finalizer],
            },
        }
        try:
            updated = await client.update(new)
        except errors.Conflict:
            current = await client.get(req.kind, req.name, req.herd)
            continue
        # An update emptying the finalizers of an object being deleted deletes it.
        return updated
    raise errors.Conflict(f"could not update the finalizers of {req} after {attempts} attempts")


# -- conditions ---------------------------------------------------------------------------------


def get_condition(obj: Obj, type_: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def set_condition(
    obj: Obj,
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str = "",
    *,
    now: str | None = None,
) -> bool:
    """Set a condition in ``obj["status"]["conditions"]`` (in place) and ``observedGeneration``.

    ``lastTransitionTime`` changes only when ``status`` changes. Returns whether anything changed,
    so a reconciler writes status only when needed.
    """
    generation = (obj.get("metadata") or {}).get("generation")
    st: dict[str, Any] = obj.setdefault("status", {}) or {}
    obj["status"] = st
    conds: list[Obj] = [dict(c) for c in st.get("conditions") or []]
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }
    changed = False
    for i, cond in enumerate(conds):
        if cond.get("type") != type_:
            continue
        if cond.get("status") != status:
            new["lastTransitionTime"] = now or utc_now()
        else:
            new["lastTransitionTime"] = cond.get("lastTransitionTime") or now or utc_now()
        changed = cond != new
        conds[i] = new
        break
    else:
        new["lastTransitionTime"] = now or utc_now()
        conds.append(new)
        changed = True
    st["conditions"] = conds
    if st.get("observedGeneration") != generation:
        st["observedGeneration"] = generation
        changed = True
    return changed


# -- events -------------------------------------------------------------------------------------


class EventRecorder:
    """Writes ``Event`` objects (runink.schemas' ``EventSpec`` shape) about other objects,
    aggregating repeats into ``count``.

    The Event's name is derived from (object, type, reason, message), so a repeat anywhere in the
    cluster lands on the same Event: the recorder re-reads and bumps ``count`` (CAS, one retry).
    """

    def __init__(
        self, client: _client.Client, component: str, *, clock: _clock.Clock | None = None
    ) -> None:
        self.client = client
        self.component = component
        del clock  # timestamps are wall-clock (shown to people); kept for a uniform signature

    async def record(self, obj: Obj, type_: EventType, reason: str, message: str) -> Obj:
        meta = obj.get("metadata") or {}
        involved = {
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "herd": meta.get("herd"),
            "uid": meta.get("uid"),
        }
        return await self._record(involved, type_, reason, message)

    async def record_for(
        self, request: _types.Request, type_: EventType, reason: str, message: str
    ) -> Obj:
        involved = {
            "kind": request.kind,
            "name": request.name,
            "herd": request.herd,
        }
        return await self._record(involved, type_, reason, message)

    async def _record(self, involved: Obj, type_: EventType, reason: str, message: str) -> Obj:
        digest = hashlib.sha256(
            repr(
                (
                    involved.get("kind"),
                    involved.get("name"),
                    involved.get("uid"),
                    type_,
                    reason,
                    message,
                )
            ).encode()
        ).hexdigest()[:10]
        # A DNS label (at most 63 characters), stable for the same (object, type, reason, message).
        name = f"{str(involved.get('name'))[:52]}-{digest}"
        herd = involved.get("herd")
        now = utc_now()
        for _ in range(3):
            try:
                current = await self.client.get("Event", name, herd)
            except errors.NotFound:
                event = {
                    "apiVersion": API_VERSION,
                    "kind": "Event",
                    "metadata": {"name": name, "herd": herd, "labels": {}},
                    "spec": {
                        "involvedObject": {k: v for k, v in involved.items() if v is not None},
                        "type": type_,
                        "reason": reason,
                        "message": message,
                        "count": 1,
                        "firstTimestamp": now,
                        "lastTimestamp": now,
                        "source": self.component,
                    },
                }
                try:
                    return await self.client.create(event)
                except errors.AlreadyExists:
                    continue  # a concurrent recorder won: aggregate into its Event
            spec = dict(current.get("spec") or {})
            spec["count"] = int(spec.get("count", 1)) + 1
            spec["lastTimestamp"] = now
            try:
                return await self.client.update({**current, "spec": spec})
            except (errors.Conflict, errors.NotFound):
                continue
        raise errors.Conflict(f"could not record Event {name} after 3 attempts")
