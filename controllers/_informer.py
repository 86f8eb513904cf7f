"""Shared informers: one list + watch per kind, feeding a local cache and every controller's handlers.

::

    list (paged, one revision) ──▶ cache replaced, diffs emitted ──▶ synced
        ▲                                                         │
        │ Gone (revision compacted)                               ▼
        └──────────────────────────────────────────── watch(since=last revision)
                                                       │  ▲   ADDED/MODIFIED/DELETED -> cache + handlers
                 stalled: no event nor BOOKMARK for    │  │   BOOKMARK -> last revision, liveness
                 ``stall_timeout`` (kopf #585/#810)    └──┘   stream ended / Unavailable -> re-watch

The server sends BOOKMARKs every ``stall_timeout / 3``; a watchdog on the injected clock cancels a
watch that has gone quiet and resumes it from the last revision, so a silent stall cannot last.
Every ``resync_period`` each cached object is re-delivered to the handlers (level-triggered repair).
Handlers are synchronous and must not block: controllers only enqueue keys in them.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Callable, Iterable
from typing import Any

from runink.controllers import _client, _clock, _metrics
from runink.schemas import errors
from runink.store import _api

log = logging.getLogger("runink.controllers.informer")

Obj = dict[str, Any]
Handler = Callable[[Obj | None, Obj | None], None]
"""``(old, new)``: ``old`` is None on add, ``new`` is None on delete, both equal on resync."""
IndexFunc = Callable[[Obj], Iterable[str]]


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


class Informer:
    """List + watch of one kind (optionally one herd) into a cache, with indexers and handlers."""

    def __init__(
        self,
        client: _client.Client,
        kind: str,
        *,
        herd: str | None = None,
        clock: _clock.Clock | None = None,
        resync_period: float | None = 600.0,
        stall_timeout: float = 30.0,
        page_size: int = 500,
        metrics: _metrics.Metrics | None = None,
    ) -> None:
        self.client = client
        self.kind = kind
        self.herd = herd
        self._clock: _clock.Clock = clock if clock is not None else _clock.SystemClock()
        self.resync_period = resync_period
        self.stall_timeout = stall_timeout
        self.page_size = page_size
        self._metrics = metrics
        self._cache: dict[_api.ObjectKey, Obj] = {}
        self._handlers: list[Handler] = []
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[_api.ObjectKey]]] = {}
        self._synced = asyncio.Event()
        self.last_revision: _api.Revision = _api.Revision(0)
        self.last_event_at: float | None = None
        self.relists = 0
        self.restarts: dict[str, int] = {}
        self.last_error: str | None = None

    # -- registration ---------------------------------------------------------------------------

    def add_handler(self, handler: Handler) -> None:
        """Register before or after start; a late handler is first replayed the current cache."""
        self._handlers.append(handler)
        if self.has_synced:
            for obj in list(self._cache.values()):
                self._call(handler, None, obj)

    def remove_handler(self, handler: Handler) -> None:
        if handler in self._handlers:
            self._handlers.remove(handler)

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        self._indexers[name] = func
        index: dict[str, set[_api.ObjectKey]] = {}
        self._indices[name] = index
        for key, obj in self._cache.items():
            for value in func(obj):
                index.setdefault(value, set()).add(key)

    # -- reads ----------------------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def get(self, name: str, herd: str | None = None) -> Obj | None:
        return self._cache.get(_api.ObjectKey(self.kind, herd, name))

    def items(self, herd: str | None = None) -> builtins.list[Obj]:
        if herd is None:
            return list(self._cache.values())
        return [o for k, o in self._cache.items() if k.herd == herd]

    def by_index(self, name: str, value: str) -> list[Obj]:
        keys = self._indices[name].get(value, set())
        return [self._cache[k] for k in sorted(keys, key=str) if k in self._cache]

    def stalled_for(self) -> float:
        """Seconds since the last event or bookmark (0 before the first watch)."""
        return 0.0 if self.last_event_at is None else self._clock.now() - self.last_event_at

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch forever (until cancelled). Resync runs alongside."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._list_and_watch())
            if self.resync_period:
                tg.create_task(self._resync_loop(self.resync_period))

    async def _list_and_watch(self) -> None:
        retry = 0.1
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                await self._watch_once()
                retry = 0.1
            except errors.Gone:
                self._restarted("gone")
                need_list = True
            except (errors.Unavailable, errors.OutcomeUnknown, ConnectionError, OSError) as e:
                # The server is away (restart, leader change): back off, then resume from
                # the last revision; a compacted revision will surface as Gone.
                self.last_error = f"{type(e).__name__}: {e}"
                self._restarted("unavailable")
                await self._clock.sleep(retry)
                retry = min(retry * 2, 10.0)

    async def _relist(self) -> None:
        self.relists += 1
        fresh: dict[_api.ObjectKey, Obj] = {}
        token: str | None = None
        revision: _api.Revision | None = None
        while True:
            page = await self.client.list(
                self.kind, self.herd, limit=self.page_size, continue_token=token
            )
            revision = page.revision if revision is None else revision
            for obj in page.items:
                fresh[_api.ObjectKey.of(obj)] = obj
            token = page.continue_token
            if not token:
                break
        old = self._cache
        self._cache = {}
        for idx in self._indices.values():
            idx.clear()
        for key, obj in fresh.items():
            self._store(key, obj)
        # Deliver the difference, so handlers see deletions missed while the watch was gone.
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None or _rv(prev) != _rv(obj):
                self._dispatch(prev, obj)
        for key, prev in old.items():
            if key not in fresh:
                self._dispatch(prev, None)
        self.last_revision = revision
        self.last_event_at = self._clock.now()
        self._synced.set()

    async def _watch_once(self) -> None:
        """One watch stream, until it ends, fails, or the watchdog declares it stalled."""
        self.last_event_at = self._clock.now()
        stalled = False
        failure: BaseException | None = None

        async def consume() -> None:
            nonlocal failure
            try:
                stream = self.client.watch(
                    self.kind,
                    self.herd,
                    since=self.last_revision,
                    bookmark_interval=self.stall_timeout / 3,
                )
                async for event in stream:
                    self._apply(event)
            except (errors.RuninkError, ConnectionError, OSError) as e:
                failure = e  # re-raised below, outside the TaskGroup's ExceptionGroup
            finally:
                watchdog_task.cancel()

        async def watchdog() -> None:
            nonlocal stalled
            while True:
                await self._clock.sleep(self.stall_timeout / 4)
                age = self.stalled_for()
                if self._metrics is not None:
                    self._metrics.last_event_age.labels(self.kind).set(age)
                if age > self.stall_timeout:
                    stalled = True
                    consumer_task.cancel()
                    return

        async with asyncio.TaskGroup() as tg:
            watchdog_task = tg.create_task(watchdog())
            consumer_task = tg.create_task(consume())
        if failure is not None:
            raise failure
        if stalled:
            log.warning(
                "watch of %s silent for %.1fs: restarting from revision %d",
                self.kind,
                self.stall_timeout,
                self.last_revision,
            )
            self._restarted("stalled")
        else:
            self._restarted("closed")

    def _apply(self, event: _api.WatchEvent) -> None:
        self.last_event_at = self._clock.now()
        if event.type == "BOOKMARK":
            self.last_revision = max(self.last_revision, event.revision)
            return
        key = _api.ObjectKey.of(event.object)
        prev = self._cache.get(key)
        if event.type == "DELETED":
            self._drop(key)
            self._dispatch(prev if prev is not None else event.object, None)
        else:
            self._store(key, event.object)
            self._dispatch(prev, event.object)
        self.last_revision = max(self.last_revision, event.revision)

    async def _resync_loop(self, period: float) -> None:
        await self._synced.wait()
        while True:
            await self._clock.sleep(period)
            for obj in list(self._cache.values()):
                self._dispatch(obj, obj)

    # -- cache maintenance ----------------------------------------------------------------------

    def _store(self, key: _api.ObjectKey, obj: Obj) -> None:
        self._drop(key)
        self._cache[key] = obj
        for name, func in self._indexers.items():
            for value in func(obj):
                self._indices[name].setdefault(value, set()).add(key)

    def _drop(self, key: _api.ObjectKey) -> None:
        old = self._cache.pop(key, None)
        if old is None:
            return
        for name, func in self._indexers.items():
            for value in func(old):
                keys = self._indices[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indices[name][value]

    def _dispatch(self, old: Obj | None, new: Obj | None) -> None:
        for handler in list(self._handlers):
            self._call(handler, old, new)

    def _call(self, handler: Handler, old: Obj | None, new: Obj | None) -> None:
        try:
            handler(old, new)
        except Exception:  # a broken mapper (e.g. a plugin's) must not kill the informer
            log.exception("event handler for %s failed", self.kind)

    def _restarted(self, cause: str) -> None:
        self.restarts[cause] = self.restarts.get(cause, 0) + 1
        if self._metrics is not None:
            self._metrics.watch_restarts.labels(self.kind, cause).inc()


class InformerSet:
    """One informer per (kind, herd), shared by every controller of a manager."""

    def __init__(self, client: _client.Client, factory: Callable[[str], Informer]) -> None:
        self.client = client
        self._factory = factory
        self._by_kind: dict[str, Informer] = {}

    def for_kind(self, kind: str) -> Informer:
        inf = self._by_kind.get(kind)
        if inf is None:
            inf = self._by_kind[kind] = self._factory(kind)
        return inf

    def __iter__(self) -> Any:
        return iter(list(self._by_kind.values()))

    def __len__(self) -> int:
        return len(self._by_kind)
