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
import os
import struct
import threading
import zlib
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


def stage(journal: LmdbJournal | FileJournal) -> None:
    """The next ``SyncObj`` constructed on this thread uses ``journal`` as its Raft log."""
    install_factory()
    _pending.journal = journal


_REC = struct.Struct(">IIQQ")  # crc32 of the rest, command length, index, term


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(command: bytes, idx: int, term: int) -> bytes:
    body = struct.pack(">QQ", idx, term) + command
    return _REC.pack(zlib.crc32(body), len(command), idx, term) + command


class FileJournal(_pjournal.Journal):  # type: ignore[misc]
    """pysyncobj ``Journal`` as an append-only file of CRC-checked records, one ``fdatasync`` per
    ``flush()`` (an LMDB commit costs two syncs: data, then its meta page).

    ``<dir>/log``: records ``[crc32][len][idx][term][command]``; a torn or corrupt tail (a crash
    mid-write) is cut at load. Records added while ``batching`` are kept in memory and written
    with one ``write`` at ``flush()`` (or before any truncation): one syscall per batch, not per
    entry, as each syscall also hands the GIL to the event loop's thread. Conflict truncation is an ``ftruncate``; compaction rewrites the
    kept tail to a new file, fsyncs and renames it. ``<dir>/vote.json`` (term, vote) is replaced
    durably before any message reflecting it leaves; ``<dir>/commit`` is a hint, written lazily.
    Same threading and ``batching``/``pending``/``flush`` contract as ``LmdbJournal``.
    """

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self._dir = path
        self._log = os.path.join(path, "log")
        self.batching = False
        self._dirty = False
        self._entries: list[Entry] = []
        self._offsets: list[int] = []
        self._unwritten: list[bytes] = []  # records past the file's end, in order (see flush)
        # Entries cut by deleteEntriesFrom but still on disk: pysyncobj's follower cuts after
        # prevLogIdx on every AppendEntries and re-adds the same entries (research/store.md 1.5e);
        # identical re-adds are taken back without I/O, and the file is cut only on a difference.
        self._cut: list[Entry] = []
        self._cut_offsets: list[int] = []
        created = not os.path.exists(self._log)
        self._fd = os.open(self._log, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        if created:
            _fsync_dir(path)
        self._size = self._load()
        self._vote: dict[str, Any] = self._read_json("vote.json")
        self._commit = int(self._read_json("commit").get("commit", 1))

    def _load(self) -> int:
        with open(self._log, "rb") as f:
            data = f.read()
        pos = 0
        while pos + _REC.size <= len(data):
            crc, n, idx, term = _REC.unpack_from(data, pos)
            end = pos + _REC.size + n
            command = data[pos + _REC.size : end]
            if end > len(data) or zlib.crc32(struct.pack(">QQ", idx, term) + command) != crc:
                break
            self._entries.append((command, idx, term))
            self._offsets.append(pos)
            pos = end
        if pos != len(data):
            os.ftruncate(self._fd, pos)  # a torn tail: the entry was never acknowledged
            os.fdatasync(self._fd)
        return pos

    def _read_json(self, name: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self._dir, name)) as f:
                value = json.load(f)
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _write_json(self, name: str, value: dict[str, Any], *, durable: bool) -> None:
        path = os.path.join(self._dir, name)
        with open(path + ".tmp", "w") as f:
            json.dump(value, f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.rename(path + ".tmp", path)
        if durable:
            _fsync_dir(self._dir)

    @property
    def pending(self) -> bool:
        return self._dirty

    def flush(self) -> None:
        self._settle_cut()
        if self._dirty:
            self._write_out()
            os.fdatasync(self._fd)
            self._dirty = False

    def _write_out(self) -> None:
        """Append the records kept in memory to the file (``_size`` already counts them)."""
        if self._unwritten:
            data = b"".join(self._unwritten)
            self._unwritten = []
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]

    def _settle_cut(self) -> None:
        self._write_out()
        if self._cut:
            size = self._cut_offsets[0]
            os.ftruncate(self._fd, size)
            self._size = size
            self._cut, self._cut_offsets = [], []
            self._dirty = True

    def _changed(self) -> None:
        self._dirty = True
        if not self.batching:
            self.flush()

    # -- pysyncobj Journal interface -----------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        command = bytes(command)
        if self._cut:
            if self._cut[0] == (command, idx, term):
                self._entries.append(self._cut.pop(0))
                self._offsets.append(self._cut_offsets.pop(0))
                return
            self._settle_cut()
        rec = _record(command, idx, term)
        self._unwritten.append(rec)
        self._entries.append((command, idx, term))
        self._offsets.append(self._size)
        self._size += len(rec)
        self._changed()

    def clear(self) -> None:
        self._settle_cut()
        self._truncate(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        self._settle_cut()
        if entryFrom < len(self._entries):
            self._cut = self._entries[entryFrom:]
            self._cut_offsets = self._offsets[entryFrom:]
            del self._entries[entryFrom:]
            del self._offsets[entryFrom:]
            if not self.batching:
                self.flush()

    def _truncate(self, i: int) -> None:
        self._write_out()
        size = self._offsets[i] if i < len(self._offsets) else self._size
        os.ftruncate(self._fd, size)
        self._size = size
        del self._entries[i:]
        del self._offsets[i:]
        self._changed()

    def deleteEntriesTo(self, entryTo: int) -> None:
        # Compaction (after a snapshot): rewrite the kept tail into a new file, then swap.
        self._settle_cut()
        keep = self._entries[entryTo:]
        tmp = self._log + ".tmp"
        with open(tmp, "wb") as f:
            for command, idx, term in keep:
                f.write(_record(command, idx, term))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self._log)
        _fsync_dir(self._dir)
        os.close(self._fd)
        self._fd = os.open(self._log, os.O_RDWR | os.O_APPEND)
        self._entries, self._offsets = [], []
        self._size = self._load()
        self._dirty = False

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.flush()
        self._write_json("commit", {"commit": self._commit}, durable=False)
        os.close(self._fd)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # A hint for restarts (the leader re-teaches it); written once a second, not synced.
        self._commit = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return self._commit

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._vote = {"term": term, "vote": votedForNodeId}
        self._write_json("vote.json", self._vote, durable=True)

    def getCurrentTerm(self) -> int:
        return int(self._vote.get("term", 0))

    def getVotedForNodeId(self) -> Any:
        return self._vote.get("vote")

    def onOneSecondTimer(self) -> None:
        self._write_json("commit", {"commit": self._commit}, durable=False)
