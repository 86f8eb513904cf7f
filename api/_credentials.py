"""API keys and node bootstrap tokens kept in the Barn (replicated with it), served from memory.

Every API server of a cluster must accept the same keys and refuse the same revoked ones, so the
records of ``_apikeys`` live in the Barn, one object per key, of two reserved kinds:

    {"apiVersion": "runink.io/v1", "kind": "system:APIKey" | "system:BootstrapToken",
     "metadata": {"name": <key id>, ...}, "spec": <the _apikeys record>}

The records hold only the key id in clear and a SHA-256 of the secret (see ``_apikeys``), so the
Raft log and the LMDB files never see a secret. The ``system:`` kinds are not in the schema
registry: the generic resource API refuses them by name, and ``Handlers.watch`` drops them from
an all-kinds watch (:func:`is_reserved`). Only the Auth RPCs and the bearer authenticator reach
them, through :class:`RecordCache`.

A :class:`RecordCache` keeps ``id -> record`` in memory from a list + watch of its kind (re-list
on ``Gone``), so verifying a key per request is a dict lookup and a hash. A write through this
server updates the cache at once; a write through another replica arrives with the watch as soon
as this replica applies the Raft entry (milliseconds on a healthy cluster). Events older than what
the cache holds are ignored, so a lagging watch never brings back a revoked record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from runink.api import _apikeys
from runink.schemas import errors
from runink.store import _api as barn_api

log = logging.getLogger(__name__)

Obj = dict[str, Any]

RESERVED_PREFIX: Final = "system:"
APIKEY_KIND: Final = "system:APIKey"
BOOTSTRAP_KIND: Final = "system:BootstrapToken"
API_VERSION: Final = "runink.io/v1"
#: Conflicting writes of one record (two replicas revoking it at once) retried this often.
_RETRIES: Final = 8


def is_reserved(kind: object) -> bool:
    """True for the Barn kinds only the server itself reads and writes (never served as CRUD)."""
    return isinstance(kind, str) and kind.startswith(RESERVED_PREFIX)


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class RecordCache:
    """``records`` (key id -> ``_apikeys`` record) of one reserved kind, current from the Barn."""

    def __init__(self, barn: barn_api.Barn, kind: str) -> None:
        if not is_reserved(kind):
            raise ValueError(f"{kind!r} is not a reserved kind (must start with {RESERVED_PREFIX})")
        self.barn, self.kind = barn, kind
        #: What ``_apikeys.verify`` reads; replaced or changed only on the event loop.
        self.records: dict[str, dict[str, Any]] = {}
        self._objects: dict[str, Obj] = {}

    def _remember(self, obj: Obj, revision: int | None = None, *, deleted: bool = False) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        rev = _rv(obj) if revision is None else revision
        held = self._objects.get(name)
        if held is not None and (_rv(held) > rev or (_rv(held) == rev and not deleted)):
            return  # an event older than what this server already wrote or saw
        if deleted:
            self._objects.pop(name, None)
            self.records.pop(name, None)
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            log.warning("%s %s has no record (spec); ignored", self.kind, name)
            return
        self._objects[name] = obj
        self.records[name] = spec

    async def refresh(self) -> barn_api.Revision:
        """Re-read every record (one consistent list); returns the list's revision."""
        objects: dict[str, Obj] = {}
        token: str | None = None
        while True:
            try:
                page = await self.barn.list(self.kind, limit=500, continue_token=token)
            except errors.Gone:  # the list's revision was compacted between two pages
                objects, token = {}, None
                continue
            for obj in page.items:
                objects[str(obj["metadata"]["name"])] = obj
            token = page.continue_token
            if token is None:
                break
        # Keep what this server wrote after the list's revision (a write racing the list).
        objects.update({n: o for n, o in self._objects.items() if _rv(o) > page.revision})
        self._objects = objects
        self.records = {n: o["spec"] for n, o in objects.items() if isinstance(o.get("spec"), dict)}
        return page.revision

    async def watch(self) -> None:
        """Keep ``records`` current (writes through every replica); runs until cancelled."""
        since = await self.refresh()
        while True:
            try:
                async for ev in self.barn.watch(self.kind, since=since):
                    since = ev.revision
                    if ev.type != "BOOKMARK":
                        self._remember(ev.object, ev.revision, deleted=ev.type == "DELETED")
            except errors.Gone:
                since = await self.refresh()

    async def create(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Store a new record (``AlreadyExists`` if its id is taken) and return it."""
        obj: Obj = {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": {"name": str(record["id"])},
            "spec": dict(record),
        }
        stored = await self.barn.create(obj)
        self._remember(stored)
        return dict(stored["spec"])

    async def get(self, key_id: str) -> tuple[Obj, dict[str, Any]]:
        """The stored object and its record, read from the Barn (``NotFound``)."""
        obj = await self.barn.get(self.kind, key_id)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            raise errors.Invalid(f"{self.kind} {key_id} in the Barn has no record (spec)")
        return obj, spec

    async def revoke(self, key_id: str, *, now: float) -> dict[str, Any]:
        """Mark the record revoked in the Barn (CAS, retried on conflict); returns it.

        Revoking a revoked record changes nothing and keeps its first ``revokedAt``."""
        for _ in range(_RETRIES):
            obj, record = await self.get(key_id)
            if record.get("revoked"):
                self._remember(obj)
                return record
            try:
                stored = await self.barn.update({**obj, "spec": _apikeys.revoke(record, now=now)})
            except errors.Conflict:
                continue
            self._remember(stored)
            return dict(stored["spec"])
        raise errors.Conflict(
            f"{self.kind} {key_id} kept changing while it was being revoked; retry the revocation"
        )

    def stale(self, *, now: float, retention: float) -> list[str]:
        """Ids of records expired or revoked more than *retention* seconds before *now*."""
        out = []
        for key_id, record in self.records.items():
            ends = [record.get("expiresAt")]
            if record.get("revoked"):
                ends.append(record.get("revokedAt") or record.get("createdAt"))
            times = []
            for t in ends:
                with contextlib.suppress(errors.Invalid, ValueError, TypeError):
                    times.append(_apikeys.parse_time(str(t)))
            if times and min(times) + retention < now:
                out.append(key_id)
        return out

    async def purge(self, *, now: float, retention: float) -> int:
        """Delete the `stale` records from the Barn (as Kubernetes' token cleaner does for
        expired bootstrap tokens); returns how many this call deleted. Replicas may race to
        delete the same record: a record already gone is not an error."""
        deleted = 0
        for key_id in self.stale(now=now, retention=retention):
            held = self._objects.get(key_id)
            try:
                obj = await self.barn.delete(
                    self.kind, key_id, resource_version=str(_rv(held)) if held else None
                )
            except (errors.NotFound, errors.Conflict):
                continue  # gone already, or changed meanwhile: the next round decides
            self._remember(obj, _rv(obj) + 1, deleted=True)
            deleted += 1
        return deleted

    async def merge(self, record: Mapping[str, Any]) -> bool:
        """Store a record read from an old file (migration); True if the Barn changed.

        A record already in the Barn wins, except that a revocation in the file is kept."""
        key_id = str(record.get("id") or "")
        if not key_id or not isinstance(record.get("hash"), str):
            raise errors.Invalid(f"record {key_id or '(no id)'} has no id or hash")
        try:
            await self.create(record)
            return True
        except errors.AlreadyExists:
            pass
        obj, current = await self.get(key_id)
        self._remember(obj)
        if record.get("revoked") and not current.get("revoked"):
            revoked_at = record.get("revokedAt")
            for _ in range(_RETRIES):
                try:
                    stored = await self.barn.update(
                        {**obj, "spec": {**current, "revoked": True, "revokedAt": revoked_at}}
                    )
                    self._remember(stored)
                    return True
                except errors.Conflict:
                    obj, current = await self.get(key_id)
                    if current.get("revoked"):
                        return False
        return False


async def migrate_file(path: Path, cache: RecordCache) -> int:
    """Move the records of an old ``{id: record}`` JSON file (``<data dir>/secrets/*.json``, before
    the Barn held them) into the Barn, then rename the file ``<name>.migrated``.

    Returns how many records changed the Barn. Idempotent: replicas sharing the file may race.
    Raises ``Invalid`` naming the file if it cannot be read, so no key is silently dropped."""
    try:
        raw = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        return 0  # another replica sharing the directory migrated it meanwhile
    try:
        records = json.loads(raw)
        if not isinstance(records, dict):
            raise ValueError("expected a JSON object {id: record}")
    except ValueError as e:
        raise errors.Invalid(
            f"cannot migrate {path} into the Barn: {e}; repair the file (or move it away to drop "
            "its keys) and start the server again"
        ) from None
    changed = 0
    for key_id, record in records.items():
        if not isinstance(record, dict):
            raise errors.Invalid(
                f"cannot migrate {path} into the Barn: entry {key_id!r} is not a record; repair "
                "the file (or move it away to drop its keys) and start the server again"
            )
        try:
            changed += await cache.merge({"id": key_id, **record})
        except errors.Invalid as e:
            raise errors.Invalid(
                f"cannot migrate {path} into the Barn: {e.message}; repair the file (or move it "
                "away to drop its keys) and start the server again"
            ) from None
    target = path.with_name(path.name + ".migrated")
    with contextlib.suppress(FileNotFoundError):  # renamed by a replica sharing the directory
        os.replace(path, target)
    log.info("migrated %d records of %s into the Barn; it is now %s", len(records), path, target)
    return changed


__all__ = [
    "APIKEY_KIND",
    "BOOTSTRAP_KIND",
    "RESERVED_PREFIX",
    "RecordCache",
    "is_reserved",
    "migrate_file",
]
