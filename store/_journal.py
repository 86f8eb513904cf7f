"""A durable Raft log for pysyncobj, kept in its own LMDB environment and committed with fsync.

pysyncobj's ``FileJournal`` writes into an mmap and never fsyncs, so an acknowledged entry can vanish
in a power cut (research/store.md 1.3, 4.8). ``LmdbJournal`` implements pysyncobj's ``Journal``
interface over an LMDB env (``sync=True``). Writes are grouped in one pending write transaction that
``flush()`` commits; ``store._raft`` calls ``flush()`` before every tick, at the end of every tick and
before any message that acknowledges log entries leaves the node, so an entry is on disk before a
follower acks it or a leader counts itself in a majority. Term and vote are committed at once.

The entries since the last compaction are also kept in a list, as pysyncobj reads the log by list
position (``log[-1]``, ``log[diff:]``) on every tick.
"""

from __future__ import annotations

import json
import struct
import threading
from typing import Any

import lmdb
from pysyncobj import journal as _pjournal

_IDX = struct.Struct(">Q")
_META_KEY = b"meta"
_MAP_SIZE = 1 << 34

Entry = tuple[bytes, int, int]


class LmdbJournal(_pjournal.Journal):  # type: ignore[misc]
    """pysyncobj ``Journal`` over LMDB. All writes happen on one thread (the tick thread), except
    the constructor's first entry, committed at once (``batching`` is off until the tick starts)."""

    def __init__(self, path: str) -> None:
        self._env = lmdb.open(path, map_size=_MAP_SIZE, max_dbs=4, sync=True, subdir=True)
        self._log_db = self._env.open_db(b"raftlog")
        self._meta_db = self._env.open_db(b"raftmeta")
        self._lock = threading.Lock()
        self._txn: lmdb.Transaction | None = None
        self.batching = False
        self._entries: list[Entry] = []
        with self._env.begin(db=self._log_db) as txn:
            for key, value in txn.cursor():
                (idx,) = _IDX.unpack(key)
                term = struct.unpack(">Q", value[:8])[0]
                self._entries.append((bytes(value[8:]), idx, term))
            raw = txn.get(_META_KEY, db=self._meta_db)
        self._meta: dict[str, Any] = json.loads(raw) if raw else {}

    # -- transaction handling ------------------------------------------------------------------

    def _write(self) -> lmdb.Transaction:
        if self._txn is None:
            self._txn = self._env.begin(write=True)
        return self._txn

    @property
    def pending(self) -> bool:
        """Whether changes are waiting for ``flush()``."""
        return self._txn is not None

    def flush(self) -> None:
        """Commit (and fsync) every pending change. Cheap when nothing is pending."""
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.commit()

    def _maybe_flush(self) -> None:
        if not self.batching:
            self.flush()

    def _put_meta(self) -> None:
        self._write().put(_META_KEY, json.dumps(self._meta).encode(), db=self._meta_db)

    # -- pysyncobj Journal interface -----------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        command = bytes(command)
        self._entries.append((command, idx, term))
        self._write().put(_IDX.pack(idx), struct.pack(">Q", term) + command, db=self._log_db)
        self._maybe_flush()

    def clear(self) -> None:
        txn = self._write()
        txn.drop(self._log_db, delete=False)
        self._entries = []
        self._maybe_flush()

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        txn = self._write()
        for _, idx, _ in self._entries[entryFrom:]:
            txn.delete(_IDX.pack(idx), db=self._log_db)
        del self._entries[entryFrom:]
        self._maybe_flush()

    def deleteEntriesTo(self, entryTo: int) -> None:
        txn = self._write()
        for _, idx, _ in self._entries[:entryTo]:
            txn.delete(_IDX.pack(idx), db=self._log_db)
        self._entries = self._entries[entryTo:]
        self._maybe_flush()

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.flush()
        self._env.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # Not needed for safety (the commit index is re-learnt from the leader); written with the
        # next flush rather than on its own fsync.
        if self._meta.get("commit") != raftCommitIndex:
            self._meta["commit"] = raftCommitIndex
            self._put_meta()
            self._maybe_flush()

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.get("commit", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        # Raft: term and vote must be durable before any message reflecting them is sent.
        self._meta["term"] = term
        self._meta["vote"] = votedForNodeId
        self._put_meta()
        self.flush()

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> Any:
        return self._meta.get("vote")

    def onOneSecondTimer(self) -> None:
        pass


_factory_lock = threading.Lock()
_pending = threading.local()
_original_create: Any = None


def install_factory() -> None:
    """Make pysyncobj's ``createJournal`` return the ``LmdbJournal`` staged by ``stage()`` on the
    constructing thread (and the stock journal otherwise). Idempotent."""
    global _original_create
    from pysyncobj import syncobj as _psyncobj

    with _factory_lock:
        if _original_create is not None:
            return
        _original_create = _psyncobj.createJournal

        def create(journal_file: str | None = None) -> Any:
            staged = getattr(_pending, "journal", None)
            if staged is not None:
                _pending.journal = None
                return staged
            assert _original_create is not None
            return _original_create(journal_file)

        _psyncobj.createJournal = create


def stage(journal: LmdbJournal) -> None:
    """The next ``SyncObj`` constructed on this thread uses ``journal`` as its Raft log."""
    install_factory()
    _pending.journal = journal
