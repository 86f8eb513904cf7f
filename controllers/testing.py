"""The testing kit: test a reconciler in a few lines, with no server and no real time.

    async with testing.Environment(my_controller) as env:
        await env.client.create(greeting)
        await env.run_until_idle()
        assert (await env.client.get("Greeting", "hi", "default"))["status"]["ready"]

:class:`InMemoryClient` wraps ``runink.store.open_memory()`` (the real Barn semantics, in memory) and
adds fault injection (stalled watches). :class:`FakeClock` moves only on ``advance``; its
``run_until_idle`` lets every task run until the manager has nothing left to do, optionally
jumping the clock to due timers (backoff, ``requeue_after``, resync, stall detection).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from runink import store
from runink.controllers import _controller, _manager
from runink.store import _api

Obj = dict[str, Any]


class _FakeTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A Clock that stands still until told to move (``advance``, ``run_until_idle(advance=...)``)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, Callable[[], None], _FakeTimer]] = []
        self._seq = itertools.count()
        self._idle_checks: list[Callable[[], bool]] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        """The fake clock is its own epoch: start it at ``time.time()`` to mix with stored times."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> _FakeTimer:
        timer = _FakeTimer()
        heapq.heappush(self._timers, (when, next(self._seq), callback, timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_at(self._now + max(0.0, seconds), wake)
        try:
            await fut
        finally:
            timer.cancel()

    def next_deadline(self) -> float | None:
        while self._timers and self._timers[0][3].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due, in deadline order."""
        target = self._now + seconds
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            _, _, callback, timer = heapq.heappop(self._timers)
            self._now = max(self._now, deadline)
            timer.cancelled = True
            callback()
        self._now = target

    def add_idle_check(self, check: Callable[[], bool]) -> None:
        """``run_until_idle`` waits until every check returns True (the Environment adds the manager's)."""
        self._idle_checks.append(check)

    async def settle(self, *, max_rounds: int = 100_000) -> None:
        """Let other tasks run until every idle check holds twice in a row (no clock movement)."""
        streak = 0
        for _ in range(max_rounds):
            await asyncio.sleep(0)
            if all(check() for check in self._idle_checks):
                streak += 1
                if streak >= 3:
                    return
            else:
                streak = 0
        raise TimeoutError(f"not idle after {max_rounds} event-loop rounds")

    async def run_until_idle(self, advance: float = 0.0) -> None:
        """Settle; then, up to ``advance`` seconds ahead, jump to each due timer and settle again."""
        limit = self._now + advance
        await self.settle()
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > limit:
                break
            self.advance(max(0.0, deadline - self._now))
            await self.settle()
        if limit > self._now:
            self.advance(limit - self._now)
            await self.settle()


class InMemoryClient:
    """The controllers' Client over ``runink.store.open_memory()``, with fault injection."""

    def __init__(self, barn: store.LocalBarn | None = None) -> None:
        self.barn = barn if barn is not None else store.open_memory()
        self._ids = itertools.count()
        self._open: set[int] = set()
        self._stalled: set[int] = set()
        self.watches_started = 0
        self._kind_revision: dict[str, int] = {}

    @property
    def revision(self) -> _api.Revision:
        return self.barn.revision

    async def create(self, obj: Obj) -> Obj:
        return self._wrote(await self.barn.create(obj))

    async def get(
        self, kind: str, name: str, herd: str | None = None, *, linearizable: bool = False
    ) -> Obj:
        return await self.barn.get(kind, name, herd, linearizable=linearizable)

    async def list(
        self,
        kind: str,
        herd: str | None = None,
        *,
        selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
        linearizable: bool = False,
    ) -> _api.ListResult:
        return await self.barn.list(
            kind,
            herd,
            selector=selector,
            limit=limit,
            continue_token=continue_token,
            linearizable=linearizable,
        )

    async def update(self, obj: Obj) -> Obj:
        return self._wrote(await self.barn.update(obj))

    async def update_status(self, obj: Obj) -> Obj:
        return self._wrote(await self.barn.update_status(obj))

    async def delete(
        self, kind: str, name: str, herd: str | None = None, *, resource_version: str | None = None
    ) -> Obj:
        gone = await self.barn.delete(kind, name, herd, resource_version=resource_version)
        # The returned resourceVersion is the deletion's revision (or, at worst, an earlier one):
        # a lower bound that the DELETED event is sure to reach.
        return self._wrote(gone)

    def _wrote(self, obj: Obj) -> Obj:
        kind = str(obj.get("kind"))
        rv = int(obj["metadata"]["resourceVersion"])
        self._kind_revision[kind] = max(self._kind_revision.get(kind, 0), rv)
        return obj

    def kind_revision(self, kind: str) -> int:
        """The revision of the last write of ``kind`` made through this client (for idleness)."""
        return self._kind_revision.get(kind, 0)

    async def compact(self, revision: _api.Revision) -> None:
        await self.barn.compact(revision)

    def watch(
        self,
        kind: str | None = None,
        herd: str | None = None,
        *,
        since: _api.Revision | None = None,
        selector: str | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[_api.WatchEvent]:
        return self._watch(kind, herd, since, selector, bookmark_interval)

    async def _watch(
        self,
        kind: str | None,
        herd: str | None,
        since: _api.Revision | None,
        selector: str | None,
        bookmark_interval: float | None,
    ) -> AsyncIterator[_api.WatchEvent]:
        wid = next(self._ids)
        self._open.add(wid)
        self.watches_started += 1
        stream = self.barn.watch(
            kind, herd, since=since, selector=selector, bookmark_interval=bookmark_interval
        )
        try:
            async for event in stream:
                if wid in self._stalled:
                    # A silently dead stream: no events, no bookmarks, no error (kopf #810).
                    await asyncio.Event().wait()
                yield event
        finally:
            self._open.discard(wid)
            self._stalled.discard(wid)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def stall_watches(self) -> int:
        """Make every open watch go silent forever (new watches work). Returns how many."""
        self._stalled |= self._open
        return len(self._open)

    @property
    def open_watches(self) -> int:
        return len(self._open)

    async def close(self) -> None:
        await self.barn.close()


class Environment:
    """A manager over an in-memory client and a fake clock, running for the ``async with`` block."""

    def __init__(
        self,
        *controllers: _controller.Controller,
        client: InMemoryClient | None = None,
        clock: FakeClock | None = None,
        election: _manager.LeaderElection | None = None,
        resync_period: float | None = None,
        stall_timeout: float = 30.0,
        http_port: int | None = None,
    ) -> None:
        self.client = client if client is not None else InMemoryClient()
        self.clock = clock if clock is not None else FakeClock()
        self.manager = _manager.Manager(
            self.client,
            clock=self.clock,
            election=election,
            resync_period=resync_period,
            stall_timeout=stall_timeout,
            http_port=http_port,
        )
        self.manager.add(*controllers)
        self.clock.add_idle_check(self.manager.idle)
        self._tg: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> Environment:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._tg.create_task(self.manager.run())
        await self.manager.wait_started()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.manager.stop()
        assert self._tg is not None
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            await self.client.close()

    async def run_until_idle(self, advance: float = 0.0) -> None:
        await self.clock.run_until_idle(advance)
