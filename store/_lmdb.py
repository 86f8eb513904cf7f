"""The LMDB backend: the Barn's durable storage, one environment with three named databases.

``objects`` (key ``kind\\0herd\\0name`` -> JSON object), ``log`` (u64 big-endian revision ->
change, for watch resume and lists at a kept revision) and ``meta`` (revision, compacted revision,
Raft ``applied_index``), all written in one transaction per commit, fsynced (``sync=True``).
Write transactions stay on the thread that opened them (an LMDB rule); read transactions are
short and never held across an ``await``. The Raft engineer's replicas use this same class.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lmdb

from runink.schemas import errors
from runink.store import _fsm

DEFAULT_MAP_SIZE = 8 << 30  # a sparse reservation: costs nothing until used


class _Txn:
    def __init__(self, txn: Any, dbs: dict[_fsm.Table, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def get(self, table: _fsm.Table, key: bytes) -> bytes | None:
        value = self._txn.get(key, db=self._dbs[table])
        return None if value is None else bytes(value)

    def scan(
        self, table: _fsm.Table, start: bytes, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        with self._txn.cursor(db=self._dbs[table]) as cur:
            if not cur.set_range(start):
                return
            for k, v in cur:
                if end is not None and k >= end:
                    return
                yield bytes(k), bytes(v)

    def put(self, table: _fsm.Table, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[table])

    def delete(self, table: _fsm.Table, key: bytes) -> None:
        self._txn.delete(key, db=self._dbs[table])


class LmdbBackend:
    """An LMDB environment at ``path`` (a directory, created if missing)."""

    #: Commits fsync, so the Barn runs them on a writer thread with group commit.
    threaded = True

    def __init__(
        self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True
    ) -> None:
        # sync=False (Raft replicas only): commits skip fsync because the fsynced Raft journal
        # already holds every applied entry; the replica replays it after a crash.
        os.makedirs(path, exist_ok=True)
        try:
            self._env = lmdb.open(
                os.fspath(path), map_size=map_size, max_dbs=4, sync=sync, metasync=sync
            )
        except lmdb.Error as e:
            raise errors.Unavailable(f"cannot open the Barn at {os.fspath(path)!r}: {e}") from e
        self.path = os.fspath(path)
        self._dbs: dict[_fsm.Table, Any] = {
            t: self._env.open_db(t.encode()) for t in ("objects", "log", "meta")
        }

    @contextmanager
    def read(self) -> Iterator[_fsm.ReadTxn]:
        # buffers=False: values are copied out, so they stay valid after the transaction ends.
        with self._env.begin() as txn:
            yield _Txn(txn, self._dbs)

    @contextmanager
    def write(self) -> Iterator[_fsm.WriteTxn]:
        """One write transaction, committed (and fsynced) on normal exit, aborted on error."""
        with self._env.begin(write=True) as txn:
            yield _Txn(txn, self._dbs)

    def begin_write(self) -> LmdbWriteTxn:
        """A write transaction left open across calls (a Raft tick applying many entries).

        The caller commits (one fsync for the whole tick) or aborts it, on the thread that
        opened it, before anyone waits on the results.
        """
        return LmdbWriteTxn(self._env.begin(write=True), self._dbs)

    def copy_to(self, fd: int) -> None:
        """Write a compacted image of the committed state (a ``data.mdb``) to the file ``fd``."""
        self._env.copyfd(fd, compact=True)

    def flush(self) -> None:
        """Force committed data to disk (for ``sync=False`` environments)."""
        self._env.sync(True)

    def close(self) -> None:
        self._env.close()


class LmdbWriteTxn(_Txn):
    def commit(self) -> None:
        self._txn.commit()

    def abort(self) -> None:
        self._txn.abort()
