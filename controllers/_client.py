"""The store client that controllers consume (a consumer-defined Protocol, DESIGN.md Layout).

Method names and signatures are the Barn's (runink/store/_api.py), so the in-process LocalBarn, the
gRPC client of runink.api and the testing kit's in-memory client all satisfy it structurally; the
composition root (runink.cli) picks one. Controllers never import runink.api.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from runink.store import _api

Obj = dict[str, Any]


class Client(Protocol):
    """CRUD + watch over versioned objects. Every method may raise ``runink.schemas.errors`` errors:
    ``NotFound``, ``AlreadyExists``, ``Conflict`` (stale resourceVersion), ``Gone`` (compacted
    watch revision: re-list), ``Unavailable``."""

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
    ) -> _api.ListResult: ...

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
        since: _api.Revision | None = None,
        selector: str | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[_api.WatchEvent]: ...
