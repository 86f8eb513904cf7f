"""How commands reach ``_fsm.apply``: inline (memory) or through a group-committing writer thread.

A committer takes encoded commands, applies them durably and calls ``on_committed(results)`` on the
event loop, in apply order, *after* the data is committed (so a watcher or reader never sees
uncommitted state), then resolves the proposer's future. ``LocalBarn`` only talks to this
interface: the Raft adapter supplies its own committer (propose, apply on every replica with the
Raft index, call ``on_committed`` for every entry applied locally, whoever proposed it).

Group commit: the writer thread takes every command queued while the previous fsync ran and
applies them all in one LMDB write transaction with one fsync (bench/store_bench.py measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from runink.schemas import errors
from runink.store import _fsm

OnCommitted = Callable[[Sequence[_fsm.ApplyResult]], None]


class Backend(Protocol):
    """What the Barn needs from storage (``_memory.MemoryBackend``, ``_lmdb.LmdbBackend``)."""

    #: True when a commit is slow (fsync): writes then go through a writer thread.
    threaded: bool

    def read(self) -> contextlib.AbstractContextManager[_fsm.ReadTxn]: ...

    def write(self) -> contextlib.AbstractContextManager[_fsm.WriteTxn]: ...

    def close(self) -> None: ...


class Committer(Protocol):
    def start(self, on_committed: OnCommitted) -> None:
        """Register the callback; called once, before the first submit."""
        ...

    async def submit(self, command: bytes) -> _fsm.ApplyResult:
        """Apply ``command`` durably; returns after ``on_committed`` has seen its result."""
        ...

    def submit_nowait(self, command: bytes) -> None:
        """Queue a command nobody waits for (automatic compaction)."""
        ...

    async def close(self) -> None: ...


class InlineCommitter:
    """Applies each command at once in the caller's thread: for backends with free commits."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._on_committed: OnCommitted = lambda results: None
        self._closed = False

    def start(self, on_committed: OnCommitted) -> None:
        self._on_committed = on_committed

    def _apply(self, command: bytes) -> _fsm.ApplyResult:
        if self._closed:
            raise errors.Unavailable("the Barn is closed")
        with self._backend.write() as txn:
            result = _fsm.apply(command, txn)
        self._on_committed([result])
        return result

    async def submit(self, command: bytes) -> _fsm.ApplyResult:
        return self._apply(command)

    def submit_nowait(self, command: bytes) -> None:
        self._apply(command)

    async def close(self) -> None:
        self._closed = True


_Item = tuple[bytes, "asyncio.Future[_fsm.ApplyResult] | None", asyncio.AbstractEventLoop]


class GroupCommitter:
    """One writer thread owns every LMDB write transaction (an LMDB rule) and batches commands.

    ``max_batch=1`` turns group commit off (one fsync per command), for comparison.
    """

    def __init__(self, backend: Backend, *, max_batch: int = 256) -> None:
        self._backend = backend
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._on_committed: OnCommitted = lambda results: None
        self._closed = False
        self._lock = threading.Lock()

    def start(self, on_committed: OnCommitted) -> None:
        self._on_committed = on_committed

    async def submit(self, command: bytes) -> _fsm.ApplyResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_fsm.ApplyResult] = loop.create_future()
        self._put((command, fut, loop))
        # If the caller is cancelled here the command may still commit (as a Raft proposal would).
        return await fut

    def submit_nowait(self, command: bytes) -> None:
        self._put((command, None, asyncio.get_running_loop()))

    def _put(self, item: _Item) -> None:
        with self._lock:
            if self._closed:
                raise errors.Unavailable("the Barn is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="barn-writer", daemon=True)
                self._thread.start()
            self._queue.put(item)

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(thread.join)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            loop = batch[0][2]
            try:
                with self._backend.write() as txn:
                    results = [_fsm.apply(cmd, txn) for cmd, _, _ in batch]
            except Exception as e:  # noqa: BLE001 - the writer thread must report, never die silently
                error = errors.Unavailable(f"the Barn could not commit: {e!r}")
                self._call(loop, self._fail, batch, error)
                continue
            self._call(loop, self._done, batch, results)

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
        # A closed loop means nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, *args)

    def _done(self, batch: list[_Item], results: list[_fsm.ApplyResult]) -> None:
        self._on_committed(results)
        for (_, fut, _), result in zip(batch, results, strict=True):
            if fut is not None and not fut.done():
                fut.set_result(result)

    @staticmethod
    def _fail(batch: list[_Item], error: errors.RuninkError) -> None:
        for _, fut, _ in batch:
            if fut is not None and not fut.done():
                fut.set_exception(error)
