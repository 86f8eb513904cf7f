"""The garbage collector: dependents follow their owners (ownerReferences), in three modes.

- **background** (plain delete): once the owner is gone, each dependent whose only owners are gone
  is deleted; references to a gone owner are stripped from dependents that keep another owner;
- **foreground**: the owner carries the ``foregroundDeletion`` finalizer; its dependents are
  deleted first, then the finalizer is removed (and the owner goes);
- **orphan**: the owner carries the ``orphan`` finalizer; ownerReferences to it are stripped from
  its dependents, then the finalizer is removed.

One controller per owner kind, keyed by the owner; dependents' changes requeue their owners. The
owner's absence is confirmed with a linearizable read before anything is deleted. Reads go to the
store (not the cache): the collector must never act on a stale view.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from runink.controllers import _client, _controller, _helpers, _types
from runink.schemas import errors

log = logging.getLogger("runink.controllers.gc")

Obj = dict[str, Any]
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


def _refs(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


class GarbageCollector:
    """Reconciles one owner kind against every dependent kind."""

    def __init__(
        self, client: _client.Client, owner_kind: str, dependent_kinds: Sequence[str]
    ) -> None:
        self.client = client
        self.owner_kind = owner_kind
        self.dependent_kinds = list(dependent_kinds)

    async def _find_owner(self, request: _types.Request) -> Obj | None:
        try:
            return await self.client.get(
                request.kind, request.name, request.herd, linearizable=True
            )
        except errors.NotFound:
            pass
        if request.herd is not None:
            # ownerReferences carry no herd: the owner may be cluster-scoped.
            try:
                return await self.client.get(request.kind, request.name, None, linearizable=True)
            except errors.NotFound:
                return None
        return None

    async def reconcile(self, request: _types.Request) -> _types.Result:
        owner = await self._find_owner(request)
        meta = (owner or {}).get("metadata") or {}
        uid = meta.get("uid")
        fins = list(meta.get("finalizers") or [])
        deleting = owner is not None and bool(meta.get("deletionTimestamp"))
        if owner is not None and not deleting:
            # A live owner: its dependents are its controller's business. Without this early
            # return every child write (a run's slices write ~4 times each) re-listed every
            # dependent of the herd: quadratic in the number of children. Children of an owner
            # that was deleted and re-created under the same name are collected when that owner
            # goes (they carry the old uid), not before.
            return _types.Result()
        herd = meta.get("herd") if owner is not None else request.herd
        remaining = 0
        for kind in self.dependent_kinds:
            for dep in (await self.client.list(kind, herd)).items:
                refs = [
                    r for r in _refs(dep)
                    if r.get("kind") == self.owner_kind and r.get("name") == request.name
                ]  # fmt: skip
                if not refs:
                    continue
                if owner is None or all(r.get("uid") != uid for r in refs):
                    await self._dangling(dep, {r.get("uid") for r in refs})
                elif deleting and ORPHAN in fins:
                    await self._strip(dep, {uid})
                elif deleting and FOREGROUND in fins and await self._delete(dep):
                    remaining += 1
        if owner is not None and deleting:
            if ORPHAN in fins:
                await _helpers.remove_finalizer(self.client, owner, ORPHAN)
            elif FOREGROUND in fins and remaining == 0:
                await _helpers.remove_finalizer(self.client, owner, FOREGROUND)
        return _types.Result()

    async def _dangling(self, dep: Obj, gone_uids: set[Any]) -> None:
        others = [r for r in _refs(dep) if r.get("uid") not in gone_uids]
        if others:
            await self._strip(dep, gone_uids)
        else:
            await self._delete(dep)

    async def _strip(self, dep: Obj, uids: set[Any]) -> None:
        meta = dep.get("metadata") or {}
        refs = [r for r in _refs(dep) if r.get("uid") not in uids]
        with contextlib.suppress(errors.NotFound):  # already gone: nothing to orphan
            await self.client.update({**dep, "metadata": {**meta, "ownerReferences": refs}})
        # Conflict propagates: the reconcile is retried with a fresh read.

    async def _delete(self, dep: Obj) -> bool:
        """Delete ``dep``; True if it still exists afterwards (held by its own finalizers)."""
        meta = dep.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return True
        try:
            gone = await self.client.delete(
                str(dep.get("kind")), str(meta.get("name")), meta.get("herd"),
                resource_version=meta.get("resourceVersion"),
            )  # fmt: skip
        except errors.NotFound:
            return False
        log.info("garbage collected %s", _types.Request.of(dep))
        return bool((gone.get("metadata") or {}).get("finalizers"))


def _owner_events(old: Obj | None, new: Obj | None) -> bool:
    # The collector acts when an owner is gone or being deleted, not on its every change.
    return new is None or bool((new.get("metadata") or {}).get("deletionTimestamp"))


def _dependent_events(old: Obj | None, new: Obj | None) -> bool:
    # A dependent matters to its owners' collector when it appears, goes, or changes owners (and on
    # resyncs, where old is new); its status writes (a slice writes ~3) never change the outcome.
    return old is None or new is None or old is new or _refs(old) != _refs(new)


def _owners_of(owner_kind: str) -> _types.Mapper:
    def mapper(obj: Obj) -> Iterable[_types.Request]:
        return _controller.owner_requests(obj, owner_kind, controller_only=False)

    return mapper


def garbage_collector(
    client: _client.Client, owner_kinds: Sequence[str], dependent_kinds: Sequence[str] | None = None
) -> list[_controller.Controller]:
    """The collector's controllers: one per owner kind (``dependent_kinds`` defaults to all)."""
    deps = list(dependent_kinds if dependent_kinds is not None else owner_kinds)
    out = []
    for kind in owner_kinds:
        b = _controller.Controller.builder(f"garbage-collector-{kind.lower()}").for_kind(kind)
        b.with_predicates(_owner_events).max_concurrent(2)
        for dkind in deps:
            b.watches(dkind, _owners_of(kind), _dependent_events)
        out.append(b.build(GarbageCollector(client, kind, deps)))
    return out
