"""The in-memory backend: the Barn's test double, with the LMDB backend's exact semantics.

It stores the same encoded bytes in the same three tables as ``_lmdb`` and runs the same
``_fsm.apply``, so a suite that passes on one passes on the other. Nothing survives the process.
Used by ``runink.store.open_memory()`` (unit tests of controllers, the API and the CLI).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager

from runink.store import _fsm


class _Table:
    """A dict plus a sorted key list, for ordered range scans."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []

    def put(self, key: bytes, value: bytes) -> None:
        if key not in self.data:
            bisect.insort(self.keys, key)
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        if self.data.pop(key, None) is not None:
            del self.keys[bisect.bisect_left(self.keys, key)]

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        i = bisect.bisect_left(self.keys, start)
        j = len(self.keys) if end is None else bisect.bisect_left(self.keys, end)
        # Snapshot the slice: the caller may write to the table while iterating (compaction).
        for k in self.keys[i:j]:
            value = self.data.get(k)
            if value is not None:
                yield k, value


class _Txn:
    """Reads and writes go straight to the tables; an undo log rolls back on error."""

    def __init__(self, tables: dict[_fsm.Table, _Table], write: bool) -> None:
        self._tables = tables
        self._write = write
        self._undo: list[tuple[_fsm.Table, bytes, bytes | None]] = []

    def get(self, table: _fsm.Table, key: bytes) -> bytes | None:
        return self._tables[table].data.get(key)

    def scan(
        self, table: _fsm.Table, start: bytes, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._tables[table].scan(start, end)

    def put(self, table: _fsm.Table, key: bytes, value: bytes) -> None:
        assert self._write, "write on a read transaction"
        self._undo.append((table, key, self._tables[table].data.get(key)))
        self._tables[table].put(key, value)

    def delete(self, table: _fsm.Table, key: bytes) -> None:
        assert self._write, "write on a read transaction"
        self._undo.append((table, key, self._tables[table].data.get(key)))
        self._tables[table].delete(key)

    def rollback(self) -> None:
        for table, key, old in reversed(self._undo):
            if old is None:
                self._tables[table].delete(key)
            else:
                self._tables[table].put(key, old)
        self._undo.clear()


class MemoryBackend:
    """Three in-memory tables. Single-threaded: use it from the event loop thread only."""

    #: Commits cost nothing, so the Barn applies commands inline instead of on a writer thread.
    threaded = False

    def __init__(self) -> None:
        self._tables: dict[_fsm.Table, _Table] = {t: _Table() for t in ("objects", "log", "meta")}
        self._closed = False

    @contextmanager
    def read(self) -> Iterator[_fsm.ReadTxn]:
        self._check_open()
        yield _Txn(self._tables, write=False)

    @contextmanager
    def write(self) -> Iterator[_fsm.WriteTxn]:
        self._check_open()
        txn = _Txn(self._tables, write=True)
        try:
            yield txn
        except BaseException:
            txn.rollback()
            raise

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the memory backend is closed")
