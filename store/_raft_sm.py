"""The replicated Barn's state machine: deterministic ``apply(command, index)`` over LMDB.

Interim stand-in for the store engineer's ``store._fsm`` + ``store._lmdb`` (not landed when this
was written); ``store._raft`` talks to it only through ``apply``, ``commit``, ``get``, ``list``,
``events_after``, ``digest``, ``copy_to`` and ``replace_with``, so swapping in ``_fsm.apply`` is local.

Commands are JSON objects tagged by ``op``; uids and timestamps come from the proposer, so every
replica computes the same result. ``applied_index`` (the Raft index) and the revision are written in
the same LMDB transaction as the data: a replayed entry (``index <= applied_index``) is skipped.
Write transactions stay open across one tick (group commit) and are committed by ``commit()``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import shutil
import struct
import threading
from typing import Any

import lmdb

from runink.schemas import errors, selectors

_REV = struct.Struct(">Q")
_MAP_SIZE = 1 << 34
Obj = dict[str, Any]
Result = dict[str, Any]


def _key(kind: str, herd: str | None, name: str) -> bytes:
    return f"{kind}\x00{herd or ''}\x00{name}".encode()


def _err(exc: type[errors.RuninkError], msg: str, **details: Any) -> Result:
    return {"err": exc.reason, "msg": msg, "details": details}


def raise_for(result: Result) -> Obj:
    """The object of a successful result, or the ``RuninkError`` it describes, raised."""
    if "err" in result:
        raise errors.error_for_reason(result["err"])(result["msg"], details=result.get("details"))
    obj: Obj = result["ok"]
    return obj


class StateMachine:
    """Objects, revision log and metadata in one LMDB environment under ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()  # held around env use; taken exclusively by replace_with
        self._txn: lmdb.Transaction | None = None
        self._open()

    def _open(self) -> None:
        os.makedirs(self.path, exist_ok=True)
        self._env = lmdb.open(self.path, map_size=_MAP_SIZE, max_dbs=4, sync=True)
        self._objects = self._env.open_db(b"objects")
        self._revlog = self._env.open_db(b"revlog")
        self._meta = self._env.open_db(b"meta")
        with self._env.begin() as txn:
            self.applied_index = self._meta_int(txn, b"applied_index")
            self.revision = self._meta_int(txn, b"revision")
            self.compacted = self._meta_int(txn, b"compacted")

    def _meta_int(self, txn: lmdb.Transaction, key: bytes) -> int:
        raw = txn.get(key, db=self._meta)
        return int(raw) if raw else 0

    def close(self) -> None:
        with self._lock:
            self.commit()
            self._env.close()

    # -- writes (tick thread only) ---------------------------------------------------------------

    def commit(self) -> bool:
        """Commit (fsync) the pending group; True if something was committed."""
        with self._lock:
            txn, self._txn = self._txn, None
            if txn is None:
                return False
            txn.commit()
            return True

    def apply(self, command: bytes, index: int) -> Result:
        """Apply one committed Raft entry. Deterministic; never raises for a user error."""
        with self._lock:
            if index <= self.applied_index:
                return {"skipped": index}
            if self._txn is None:
                self._txn = self._env.begin(write=True)
            txn = self._txn
            cmd = json.loads(command)
            result = self._dispatch(txn, cmd)
            self.applied_index = index
            txn.put(b"applied_index", str(index).encode(), db=self._meta)
            return result

    def _dispatch(self, txn: lmdb.Transaction, cmd: dict[str, Any]) -> Result:
        op = cmd["op"]
        if op in ("barrier", "noop"):
            return {"ok": {"revision": self.revision}}
        if op == "compact":
            rev = min(int(cmd["revision"]), self.revision)
            cur = txn.cursor(db=self._revlog)
            keys = []
            if cur.first():
                for k in cur.iternext(values=False):
                    if _REV.unpack(k)[0] > rev:
                        break
                    keys.append(bytes(k))
            for k in keys:
                txn.delete(k, db=self._revlog)
            self.compacted = max(self.compacted, rev)
            txn.put(b"compacted", str(self.compacted).encode(), db=self._meta)
            return {"ok": {"revision": self.compacted}}
        if op == "create":
            return self._create(txn, cmd)
        if op in ("update", "update_status"):
            return self._update(txn, cmd, status_only=op == "update_status")
        if op == "delete":
            return self._delete(txn, cmd)
        return _err(errors.Invalid, f"unknown command {op!r}")

    def _bump(self, txn: lmdb.Transaction, etype: str, obj: Obj) -> int:
        self.revision += 1
        rev = self.revision
        txn.put(b"revision", str(rev).encode(), db=self._meta)
        txn.put(
            _REV.pack(rev), json.dumps({"type": etype, "object": obj}).encode(), db=self._revlog
        )
        return rev

    def _load(self, txn: lmdb.Transaction, key: bytes) -> Obj | None:
        raw = txn.get(key, db=self._objects)
        return json.loads(bytes(raw)) if raw is not None else None

    def _create(self, txn: lmdb.Transaction, cmd: dict[str, Any]) -> Result:
        obj: Obj = cmd["obj"]
        meta = obj.setdefault("metadata", {})
        key = _key(obj["kind"], meta.get("herd"), meta["name"])
        if txn.get(key, db=self._objects) is not None:
            return _err(errors.AlreadyExists, f"{obj['kind']} {meta['name']!r} already exists")
        meta["uid"] = cmd["uid"]
        meta["creationTimestamp"] = cmd["ts"]
        meta["generation"] = 1
        meta["resourceVersion"] = str(self.revision + 1)
        self._bump(txn, "ADDED", obj)
        txn.put(key, json.dumps(obj).encode(), db=self._objects)
        return {"ok": obj}

    def _update(self, txn: lmdb.Transaction, cmd: dict[str, Any], *, status_only: bool) -> Result:
        new: Obj = cmd["obj"]
        nmeta = new.get("metadata", {})
        key = _key(new["kind"], nmeta.get("herd"), nmeta["name"])
        cur = self._load(txn, key)
        if cur is None:
            return _err(errors.NotFound, f"{new['kind']} {nmeta['name']!r} not found")
        cmeta = cur["metadata"]
        want = nmeta.get("resourceVersion")
        if want is not None and want != cmeta["resourceVersion"]:
            return _err(
                errors.Conflict,
                f"{new['kind']} {nmeta['name']!r} was modified (resourceVersion "
                f"{cmeta['resourceVersion']}, not {want}): re-read and retry",
                currentResourceVersion=cmeta["resourceVersion"],
            )
        if status_only:
            cur["status"] = new.get("status")
        else:
            if new.get("spec") != cur.get("spec"):
                cmeta["generation"] = int(cmeta.get("generation", 1)) + 1
            cur["spec"] = new.get("spec")
            for field in ("labels", "annotations", "finalizers", "ownerReferences"):
                if field in nmeta:
                    cmeta[field] = nmeta[field]
        cmeta["resourceVersion"] = str(self.revision + 1)
        if cmeta.get("deletionTimestamp") and not cmeta.get("finalizers"):
            self._bump(txn, "DELETED", cur)
            txn.delete(key, db=self._objects)
            return {"ok": cur}
        self._bump(txn, "MODIFIED", cur)
        txn.put(key, json.dumps(cur).encode(), db=self._objects)
        return {"ok": cur}

    def _delete(self, txn: lmdb.Transaction, cmd: dict[str, Any]) -> Result:
        key = _key(cmd["kind"], cmd.get("herd"), cmd["name"])
        cur = self._load(txn, key)
        if cur is None:
            return _err(errors.NotFound, f"{cmd['kind']} {cmd['name']!r} not found")
        cmeta = cur["metadata"]
        want = cmd.get("resourceVersion")
        if want is not None and want != cmeta["resourceVersion"]:
            return _err(
                errors.Conflict,
                f"{cmd['kind']} {cmd['name']!r} was modified: re-read and retry",
                currentResourceVersion=cmeta["resourceVersion"],
            )
        cmeta["resourceVersion"] = str(self.revision + 1)
        if cmeta.get("finalizers"):
            if not cmeta.get("deletionTimestamp"):
                cmeta["deletionTimestamp"] = cmd["ts"]
                self._bump(txn, "MODIFIED", cur)
                txn.put(key, json.dumps(cur).encode(), db=self._objects)
            return {"ok": cur}
        self._bump(txn, "DELETED", cur)
        txn.delete(key, db=self._objects)
        return {"ok": cur}

    # -- reads (any thread; committed state only) ----------------------------------------------

    def get(self, kind: str, name: str, herd: str | None) -> Obj | None:
        with self._lock, self._env.begin(db=self._objects) as txn:
            return self._load(txn, _key(kind, herd, name))

    def list(
        self, kind: str, herd: str | None, selector: str | None, start: bytes, limit: int
    ) -> tuple[list[Obj], int, bytes | None]:
        """Items of ``kind`` (in ``herd`` if given) from key ``start``; the revision they were read
        at; the key to continue from (``None`` at the end)."""
        prefix = f"{kind}\x00{herd}\x00".encode() if herd is not None else f"{kind}\x00".encode()
        items: list[Obj] = []
        with self._lock, self._env.begin() as txn:
            rev = self._meta_int(txn, b"revision")
            cur = txn.cursor(db=self._objects)
            if not cur.set_range(max(prefix, start)):
                return items, rev, None
            for k, v in cur:
                if not bytes(k).startswith(prefix):
                    break
                if limit and len(items) >= limit:
                    return items, rev, bytes(k)
                obj = json.loads(v)
                if selectors.matches(selector, obj["metadata"].get("labels")):
                    items.append(obj)
        return items, rev, None

    def events_after(
        self, since: int, limit: int = 1000
    ) -> tuple[builtins.list[tuple[int, Obj]], int]:
        """Revision-log events with revision > ``since`` (oldest first), and the compacted rev."""
        out: builtins.list[tuple[int, Obj]] = []
        with self._lock, self._env.begin() as txn:
            compacted = self._meta_int(txn, b"compacted")
            cur = txn.cursor(db=self._revlog)
            if cur.set_range(_REV.pack(since + 1)):
                for k, v in cur:
                    out.append((_REV.unpack(k)[0], json.loads(v)))
                    if len(out) >= limit:
                        break
        return out, compacted

    def committed_revision(self) -> int:
        with self._lock, self._env.begin() as txn:
            return self._meta_int(txn, b"revision")

    def digest(self) -> tuple[int, str]:
        """(revision, sha256 of every object and revlog entry): equal on identical replicas."""
        h = hashlib.sha256()
        with self._lock, self._env.begin() as txn:
            rev = self._meta_int(txn, b"revision")
            for db in (self._objects, self._revlog):
                for k, v in txn.cursor(db=db):
                    h.update(bytes(k))
                    h.update(bytes(v))
        return rev, h.hexdigest()

    # -- snapshots -------------------------------------------------------------------------------

    def copy_to(self, fd: int) -> None:
        """Write a compacted image of the committed state to ``fd`` (call ``commit()`` first)."""
        with self._lock:
            self._env.copyfd(fd, compact=True)

    def replace_with(self, image_path: str) -> None:
        """Swap the environment for the LMDB image at ``image_path`` (a ``data.mdb`` file):
        staged in a temp dir beside ours, fsynced, then renamed in place."""
        with self._lock:
            staging = self.path + ".new"
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(staging)
            shutil.copyfile(image_path, os.path.join(staging, "data.mdb"))
            fd = os.open(os.path.join(staging, "data.mdb"), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if self._txn is not None:
                self._txn.abort()
                self._txn = None
            self._env.close()
            old = self.path + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(self.path, old)
            os.rename(staging, self.path)
            dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            shutil.rmtree(old, ignore_errors=True)
            self._open()
