"""The Barn's deterministic state machine: ``apply(command, txn)`` over a backend transaction.

Every replica (and the embedded single node) applies the same command bytes, in the same order,
through this one function, so objects, revisions and the revision log are identical everywhere.
Commands are tagged JSON (``{"op": "create"|"update"|"update_status"|"delete"|"compact", ...}``);
the proposer chooses uids and timestamps, never ``apply`` (no clock, no randomness here).

Failed commands (NotFound, AlreadyExists, Conflict, Invalid) are returned as values, write nothing
and consume no revision; only ``meta.applied_index`` moves, so a replayed Raft entry is skipped.
Backends offer three byte-keyed tables (``objects``, ``log``, ``meta``) through ``ReadTxn`` /
``WriteTxn``; all encoding lives here so the memory and LMDB backends cannot drift apart.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from runink.schemas import errors
from runink.store import _api

Table = Literal["objects", "log", "meta"]
ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]

SEP = "\x00"
_META_REVISION = b"revision"
_META_COMPACTED = b"compacted"
_META_APPLIED = b"applied_index"
# Fields a client can never set: the server (this state machine or its proposer) owns them.
SERVER_OWNED = ("uid", "creationTimestamp", "generation", "resourceVersion", "deletionTimestamp")
# What ``update`` may change in metadata; everything else there is kept from the stored object.
_CLIENT_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


class ReadTxn(Protocol):
    """A consistent read view of the three tables. Keys are bytes, ordered bytewise."""

    def get(self, table: Table, key: bytes) -> bytes | None: ...

    def scan(
        self, table: Table, start: bytes, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end`` (``end=None``: to the end), in key order."""
        ...


class WriteTxn(ReadTxn, Protocol):
    def put(self, table: Table, key: bytes, value: bytes) -> None: ...

    def delete(self, table: Table, key: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Change:
    """One committed mutation as recorded in the revision log.

    ``object`` is the new state (for DELETED, the last state stamped with the deletion revision);
    ``prev`` the state before (None for ADDED). ``prev`` lets a watcher with a label selector see
    an object leave its selection and lets a list be read at an older, still-kept revision.
    """

    revision: _api.Revision
    type: ChangeType
    key: str
    object: _api.Obj
    prev: _api.Obj | None

    def encode(self) -> bytes:
        return _dumps(
            {"type": self.type, "key": self.key, "object": self.object, "prev": self.prev}
        )

    @classmethod
    def decode(cls, revision: int, raw: bytes) -> Change:
        d = json.loads(raw)
        return cls(_api.Revision(revision), d["type"], d["key"], d["object"], d["prev"])


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying one command did.

    ``revision`` is the store revision after the command; ``object`` the resulting object (for
    a delete, its last state); ``changes`` the log entries written (empty on failure or no-op);
    ``error`` the deterministic failure, if any; ``skipped`` is True when ``index`` had already
    been applied (a replayed Raft entry): nothing was done and the other fields are empty.
    """

    revision: _api.Revision
    object: _api.Obj | None = None
    changes: tuple[Change, ...] = ()
    error: errors.RuninkError | None = None
    skipped: bool = False

    def unwrap(self) -> _api.Obj:
        """The resulting object, or raise the command's error."""
        if self.error is not None:
            raise self.error
        if self.object is None:
            raise errors.RuninkError("command produced no object")
        return self.object


@dataclass(frozen=True, slots=True)
class Meta:
    revision: _api.Revision
    compacted: _api.Revision
    applied_index: int


# --- encoding --------------------------------------------------------------------------------


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def encode_command(command: dict[str, Any]) -> bytes:
    """Command bytes as proposed and replicated (JSON; never pickle)."""
    return _dumps(command)


def decode_command(raw: bytes) -> dict[str, Any]:
    cmd = json.loads(raw)
    if not isinstance(cmd, dict) or not isinstance(cmd.get("op"), str):
        raise errors.Invalid(f"malformed store command: {raw[:80]!r}")
    return cast(dict[str, Any], cmd)


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def key_str(kind: str, herd: str | None, name: str) -> str:
    return f"{kind}{SEP}{herd or ''}{SEP}{name}"


def key_of(obj: _api.Obj) -> str:
    k = _api.ObjectKey.of(obj)
    return key_str(k.kind, k.herd, k.name)


def object_key(key: str) -> _api.ObjectKey:
    kind, herd, name = key.split(SEP)
    return _api.ObjectKey(kind, herd or None, name)


def prefix_for(kind: str, herd: str | None) -> str:
    """Key prefix of a list: one kind, optionally one herd (``""`` selects cluster-scoped)."""
    return f"{kind}{SEP}" if herd is None else f"{kind}{SEP}{herd}{SEP}"


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (prefixes here end in NUL)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


# --- reads -----------------------------------------------------------------------------------


def read_meta(txn: ReadTxn) -> Meta:
    def num(key: bytes) -> int:
        raw = txn.get("meta", key)
        return 0 if raw is None else int.from_bytes(raw, "big")

    return Meta(
        _api.Revision(num(_META_REVISION)),
        _api.Revision(num(_META_COMPACTED)),
        num(_META_APPLIED),
    )


def get_object(txn: ReadTxn, key: str) -> _api.Obj | None:
    raw = txn.get("objects", key.encode())
    return None if raw is None else cast(_api.Obj, json.loads(raw))


def iter_objects(
    txn: ReadTxn, prefix: str, after: str | None = None
) -> Iterator[tuple[str, bytes]]:
    """Current objects under ``prefix`` with key > ``after``, in key order, still encoded."""
    start = prefix.encode() if after is None else after.encode() + b"\x00"
    end = prefix_end(prefix.encode())
    for k, v in txn.scan("objects", start, end):
        yield k.decode(), v


def iter_log(txn: ReadTxn, after: int, upto: int | None = None) -> Iterator[Change]:
    """Log entries with ``after < revision <= upto``, in order."""
    end = None if upto is None else u64(upto + 1)
    for k, v in txn.scan("log", u64(after + 1), end):
        yield Change.decode(int.from_bytes(k, "big"), v)


def objects_at(
    txn: ReadTxn, prefix: str, revision: int, after: str | None = None
) -> Iterator[tuple[str, _api.Obj]]:
    """The objects under ``prefix`` as they were at ``revision`` (key > ``after``), in key order.

    Undoes the log entries after ``revision``: the first entry per key carries its state at
    ``revision`` in ``prev``. The caller checks ``revision >= compacted`` first.
    """
    overrides: dict[str, _api.Obj | None] = {}
    for change in iter_log(txn, revision):
        if change.key.startswith(prefix) and change.key not in overrides:
            overrides[change.key] = change.prev
    current = {k: v for k, v in iter_objects(txn, prefix, after) if k not in overrides}
    keys = set(current)
    keys.update(k for k, v in overrides.items() if v is not None and (after is None or k > after))
    for k in sorted(keys):
        raw = current.get(k)
        obj = overrides[k] if raw is None else json.loads(raw)
        assert obj is not None
        yield k, copy.deepcopy(obj)


# --- apply -----------------------------------------------------------------------------------


def apply(command: bytes | dict[str, Any], txn: WriteTxn, index: int | None = None) -> ApplyResult:
    """Apply one command inside ``txn``; deterministic given the command and the stored state.

    ``index`` is the Raft log index of the command (``None`` in embedded mode): a command whose
    index is not above ``meta.applied_index`` was applied before and is skipped. Expected
    failures are returned in ``ApplyResult.error``, never raised, and write nothing.
    """
    meta = read_meta(txn)
    if index is not None:
        if index <= meta.applied_index:
            return ApplyResult(meta.revision, skipped=True)
        txn.put("meta", _META_APPLIED, u64(index))
    try:
        cmd = decode_command(command) if isinstance(command, bytes) else command
        op = cmd["op"]
        if op == "create":
            return _create(cmd, txn, meta)
        if op == "update":
            return _update(cmd, txn, meta)
        if op == "update_status":
            return _update_status(cmd, txn, meta)
        if op == "delete":
            return _delete(cmd, txn, meta)
        if op == "compact":
            return _compact(cmd, txn, meta)
        raise errors.Invalid(f"unknown store command {op!r}")
    except errors.RuninkError as e:
        return ApplyResult(meta.revision, error=e)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        # A malformed command must fail the same way on every replica, not crash one of them.
        return ApplyResult(meta.revision, error=errors.Invalid(f"malformed store command: {e!r}"))


def _commit(
    txn: WriteTxn, meta: Meta, type_: ChangeType, key: str, obj: _api.Obj, prev: _api.Obj | None
) -> ApplyResult:
    rev = _api.Revision(meta.revision + 1)
    obj["metadata"]["resourceVersion"] = str(rev)
    if type_ == "DELETED":
        txn.delete("objects", key.encode())
    else:
        txn.put("objects", key.encode(), _dumps(obj))
    change = Change(rev, type_, key, obj, prev)
    txn.put("log", u64(rev), change.encode())
    txn.put("meta", _META_REVISION, u64(rev))
    return ApplyResult(rev, copy.deepcopy(obj), (change,))


def _checked_key(obj: Any) -> str:
    if not isinstance(obj, dict):
        raise errors.Invalid("object must be a JSON object")
    meta = obj.get("metadata")
    problems = []
    if not isinstance(obj.get("kind"), str) or not obj["kind"]:
        problems.append(errors.FieldError("kind", "required"))
    if not isinstance(meta, dict):
        problems.append(errors.FieldError("metadata", "required"))
    else:
        if not isinstance(meta.get("name"), str) or not meta["name"]:
            problems.append(errors.FieldError("metadata.name", "required"))
        herd = meta.get("herd")
        if herd is not None and (not isinstance(herd, str) or not herd):
            problems.append(errors.FieldError("metadata.herd", "must be a non-empty string"))
    if problems:
        raise errors.Invalid("object cannot be stored", errors=problems)
    key = key_of(obj)
    if key.count(SEP) != 2:
        raise errors.Invalid("kind, herd and name may not contain NUL characters")
    return key


def _not_found(key: str) -> errors.NotFound:
    k = object_key(key)
    where = f' in herd "{k.herd}"' if k.herd else ""
    return errors.NotFound(
        f'{k.kind} "{k.name}" not found{where}',
        details={"kind": k.kind, "herd": k.herd, "name": k.name},
    )


def _check_version(key: str, current: _api.Obj, wanted: Any) -> None:
    have = current["metadata"]["resourceVersion"]
    if wanted not in (None, "") and str(wanted) != have:
        raise errors.Conflict(
            f"cannot write {object_key(key)}: resourceVersion {wanted} is stale, the current "
            f"resourceVersion is {have}; re-read the object and apply your change again",
            details={"currentResourceVersion": have, "key": str(object_key(key))},
        )


def _create(cmd: dict[str, Any], txn: WriteTxn, meta: Meta) -> ApplyResult:
    obj = copy.deepcopy(cmd["object"])
    key = _checked_key(obj)
    if txn.get("objects", key.encode()) is not None:
        raise errors.AlreadyExists(
            f"{object_key(key)} already exists; use update (or apply) to change it",
            details={"key": str(object_key(key))},
        )
    md = obj["metadata"]
    for f in SERVER_OWNED:
        md.pop(f, None)
    md["uid"] = str(cmd["uid"])
    md["creationTimestamp"] = str(cmd["timestamp"])
    md["generation"] = 1
    return _commit(txn, meta, "ADDED", key, obj, None)


def _update(cmd: dict[str, Any], txn: WriteTxn, meta: Meta) -> ApplyResult:
    new = copy.deepcopy(cmd["object"])
    key = _checked_key(new)
    current = get_object(txn, key)
    if current is None:
        raise _not_found(key)
    _check_version(key, current, new["metadata"].get("resourceVersion"))
    cur_md = current["metadata"]
    uid = new["metadata"].get("uid")
    if uid not in (None, "") and uid != cur_md.get("uid"):
        raise errors.Conflict(
            f"cannot write {object_key(key)}: uid {uid} names an object that no longer exists "
            f"(the current one has uid {cur_md.get('uid')})",
            details={
                "currentResourceVersion": cur_md["resourceVersion"],
                "key": str(object_key(key)),
            },
        )
    md = {k: v for k, v in new["metadata"].items() if k not in SERVER_OWNED}
    md.update({k: cur_md[k] for k in SERVER_OWNED if k in cur_md})
    if cur_md.get("deletionTimestamp"):
        added = set(md.get("finalizers") or []) - set(cur_md.get("finalizers") or [])
        if added:
            raise errors.Invalid(
                f"cannot add finalizers {sorted(added)} to {object_key(key)}: it is being deleted",
                errors=[
                    errors.FieldError("metadata.finalizers", "no new finalizers while deleting")
                ],
            )
    new["metadata"] = md
    # Status has its own write path: update never changes it.
    new.pop("status", None)
    if "status" in current:
        new["status"] = current["status"]
    if _spec_of(new) != _spec_of(current):
        md["generation"] = int(cur_md.get("generation", 0)) + 1
    if new == current:
        return ApplyResult(meta.revision, copy.deepcopy(current))
    if cur_md.get("deletionTimestamp") and not md.get("finalizers"):
        return _commit(txn, meta, "DELETED", key, new, current)
    return _commit(txn, meta, "MODIFIED", key, new, current)


def _spec_of(obj: _api.Obj) -> dict[str, Any]:
    # "spec" for most kinds; kinds that keep their desired state elsewhere at the top level
    # (Secret data, ...) are covered by comparing every top-level field but metadata and status.
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _update_status(cmd: dict[str, Any], txn: WriteTxn, meta: Meta) -> ApplyResult:
    new = cmd["object"]
    key = _checked_key(new)
    current = get_object(txn, key)
    if current is None:
        raise _not_found(key)
    _check_version(key, current, new["metadata"].get("resourceVersion"))
    obj = copy.deepcopy(current)
    if "status" in new:
        obj["status"] = copy.deepcopy(new["status"])
    else:
        obj.pop("status", None)
    if obj == current:
        return ApplyResult(meta.revision, copy.deepcopy(current))
    return _commit(txn, meta, "MODIFIED", key, obj, current)


def _delete(cmd: dict[str, Any], txn: WriteTxn, meta: Meta) -> ApplyResult:
    k = cmd["key"]
    key = key_str(str(k["kind"]), k.get("herd"), str(k["name"]))
    current = get_object(txn, key)
    if current is None:
        raise _not_found(key)
    _check_version(key, current, cmd.get("resourceVersion"))
    md = current["metadata"]
    if md.get("finalizers"):
        if md.get("deletionTimestamp"):
            return ApplyResult(meta.revision, current)  # already being deleted: nothing to do
        obj = copy.deepcopy(current)
        obj["metadata"]["deletionTimestamp"] = str(cmd["timestamp"])
        return _commit(txn, meta, "MODIFIED", key, obj, current)
    return _commit(txn, meta, "DELETED", key, copy.deepcopy(current), current)


def _compact(cmd: dict[str, Any], txn: WriteTxn, meta: Meta) -> ApplyResult:
    target = int(cmd["revision"])
    if target > meta.revision:
        raise errors.Invalid(
            f"cannot compact to revision {target}: the current revision is {meta.revision}"
        )
    if target > meta.compacted:
        # Entries <= target go: a watch from ``since >= target`` needs only later ones.
        doomed = [k for k, _ in txn.scan("log", u64(meta.compacted + 1), u64(target + 1))]
        for k in doomed:
            txn.delete("log", k)
        txn.put("meta", _META_COMPACTED, u64(target))
    return ApplyResult(meta.revision)
