"""The Barn's public contract: what every backend (embedded, replicated, test memory) offers.

Objects cross this boundary as plain JSON dicts (``apiVersion, kind, metadata, spec, status``):
the Barn is kind-agnostic; validation against the pydantic models happens above it, in the API's
admission chain. ``metadata.resourceVersion`` is the decimal string of the Barn revision of the
object's last write (as in Kubernetes); every ``update`` is a compare-and-swap on it.

Watch semantics (etcd's): ``watch(since=R)`` delivers, in revision order and without gaps, every
change with revision > R; ``since=None`` starts at the current revision. A ``since`` older than
the compacted revision raises ``Gone`` (the caller re-lists and watches from the list's revision).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, NewType, Protocol

Revision = NewType("Revision", int)
Obj = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """Identity of a stored object. ``herd`` is ``None`` for cluster-scoped kinds (Herd, Node, ...)."""

    kind: str
    herd: str | None
    name: str

    @classmethod
    def of(cls, obj: Obj) -> ObjectKey:
        meta = obj.get("metadata") or {}
        return cls(str(obj.get("kind", "")), meta.get("herd"), str(meta.get("name", "")))

    def __str__(self) -> str:
        return f"{self.kind}/{self.herd}/{self.name}" if self.herd else f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class ListResult:
    """One page of a list, read at one consistent ``revision``.

    ``continue_token`` is ``None`` on the last page; passing it back returns the next page at the
    same revision (or ``Gone`` if that revision was compacted meanwhile).
    """

    items: list[Obj]
    revision: Revision
    continue_token: str | None = None


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. For ``DELETED`` the object is its last state; a ``BOOKMARK`` carries only
    ``metadata.resourceVersion`` and tells the watcher it has seen everything up to ``revision``."""

    type: EventType
    object: Obj
    revision: Revision


class Barn(Protocol):
    """The versioned object store (DESIGN.md, The Barn). All methods may raise ``RuninkError``s.

    Mutations: ``create`` (AlreadyExists), ``update`` (NotFound, Conflict; changes metadata
    labels/annotations/finalizers/ownerReferences and spec, never status; generation +1 when spec
    changes), ``update_status`` (NotFound, Conflict when a resourceVersion is given and stale; changes
    status only, never generation), ``delete`` (NotFound, Conflict; with finalizers it only sets
    ``deletionTimestamp`` and returns the object; the object goes when an update empties them).
    """

    @property
    def revision(self) -> Revision: ...

    async def create(self, obj: Obj) -> Obj: ...

    async def get(
        self, kind: str, name: str, herd: str | None = None, *, linearizable: bool = False
    ) -> Obj: ...

    async def list(
        self,
        kind: str,
        herd: str | None = None,
        *,
        selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
        linearizable: bool = False,
    ) -> ListResult: ...

    async def update(self, obj: Obj) -> Obj: ...

    async def update_status(self, obj: Obj) -> Obj: ...

    async def delete(
        self, kind: str, name: str, herd: str | None = None, *, resource_version: str | None = None
    ) -> Obj: ...

    def watch(
        self,
        kind: str | None = None,
        herd: str | None = None,
        *,
        since: Revision | None = None,
        selector: str | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[WatchEvent]: ...

    async def compact(self, revision: Revision) -> None: ...

    async def close(self) -> None: ...
