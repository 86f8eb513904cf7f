"""``LocalBarn``: the Barn protocol over one backend, the embedded single-node mode.

Writes become tagged commands (uid and timestamps chosen here, the proposer) that a committer
applies through ``_fsm.apply``, the very path replicas use; reads are local read transactions
(``linearizable`` is trivially satisfied with one node); watches are served by ``_watch.Hub``.
A retention policy compacts the revision log automatically. ``runink.store.open_local`` /
``open_memory`` build one; the Raft adapter can reuse it with its own committer.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from runink.schemas import errors, selectors
from runink.store import _api, _commit, _fsm, _watch

DEFAULT_RETENTION = 10_000
DEFAULT_RING_SIZE = 4_096
DEFAULT_WATCH_BUFFER = 4_096


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_uid() -> str:
    return str(uuid.uuid4())


class LocalBarn:
    """The Barn on one backend. Use from one event loop; ``await close()`` when done.

    ``retention``: how many revisions the log keeps (older ones are compacted automatically;
    ``0`` disables automatic compaction). ``watch_buffer``: events a watcher may lag behind before
    it is dropped with ``Gone``. ``clock`` and ``new_uid`` make proposals reproducible in tests.
    """

    def __init__(
        self,
        backend: _commit.Backend,
        *,
        committer: _commit.Committer | None = None,
        retention: int = DEFAULT_RETENTION,
        ring_size: int = DEFAULT_RING_SIZE,
        watch_buffer: int = DEFAULT_WATCH_BUFFER,
        clock: Callable[[], str] = _utc_now,
        new_uid: Callable[[], str] = _new_uid,
    ) -> None:
        self._backend = backend
        if committer is None:
            committer = (
                _commit.GroupCommitter(backend)
                if backend.threaded
                else _commit.InlineCommitter(backend)
            )
        self._committer = committer
        with backend.read() as txn:
            meta = _fsm.read_meta(txn)
        self._hub = _watch.Hub(meta.revision, ring_size=ring_size, buffer_size=watch_buffer)
        self._retention = retention
        self._compact_target = meta.compacted
        self._clock = clock
        self._new_uid = new_uid
        self._closed = False
        committer.start(self._on_committed)

    # --- Barn protocol ---------------------------------------------------------------------

    @property
    def revision(self) -> _api.Revision:
        """The revision of the last change published to watchers (and readable)."""
        return self._hub.head

    async def create(self, obj: _api.Obj) -> _api.Obj:
        cmd = {"op": "create", "object": obj, "uid": self._new_uid(), "timestamp": self._clock()}
        return (await self._submit(cmd)).unwrap()

    async def update(self, obj: _api.Obj) -> _api.Obj:
        return (await self._submit({"op": "update", "object": obj})).unwrap()

    async def update_status(self, obj: _api.Obj) -> _api.Obj:
        return (await self._submit({"op": "update_status", "object": obj})).unwrap()

    async def delete(
        self, kind: str, name: str, herd: str | None = None, *, resource_version: str | None = None
    ) -> _api.Obj:
        cmd = {
            "op": "delete",
            "key": {"kind": kind, "herd": herd, "name": name},
            "resourceVersion": resource_version,
            "timestamp": self._clock(),
        }
        return (await self._submit(cmd)).unwrap()

    async def compact(self, revision: _api.Revision) -> None:
        result = await self._submit({"op": "compact", "revision": int(revision)})
        if result.error is not None:
            raise result.error
        self._compact_target = max(self._compact_target, revision)

    async def get(
        self, kind: str, name: str, herd: str | None = None, *, linearizable: bool = False
    ) -> _api.Obj:
        self._check_open()
        key = _fsm.key_str(kind, herd, name)
        with self._backend.read() as txn:
            obj = _fsm.get_object(txn, key)
        if obj is None:
            where = f' in herd "{herd}"' if herd else ""
            raise errors.NotFound(
                f'{kind} "{name}" not found{where}',
                details={"kind": kind, "herd": herd, "name": name},
            )
        return obj

    async def list(
        self,
        kind: str,
        herd: str | None = None,
        *,
        selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
        linearizable: bool = False,
        revision: _api.Revision | None = None,
    ) -> ListResult:
        """List ``kind`` (in ``herd``; ``None``: every herd), filtered by a label selector.

        Pages of ``limit`` items share one revision: later pages are read as of the first page's
        revision (``Gone`` once it is compacted). ``revision`` (an extension to the protocol)
        reads the whole list as of an older, still-kept revision.
        """
        self._check_open()
        sel = selectors.parse_selector(selector) if selector and selector.strip() else None
        prefix = _fsm.prefix_for(kind, herd)
        after: str | None = None
        if continue_token is not None:
            revision, after = _decode_token(continue_token, prefix)
        with self._backend.read() as txn:
            meta = _fsm.read_meta(txn)
            at = meta.revision if revision is None else revision
            if at > meta.revision:
                raise errors.Invalid(
                    f"revision {at} is newer than the Barn's current revision {meta.revision}"
                )
            if at < meta.compacted:
                raise errors.Gone(
                    f"revision {at} has been compacted (history starts after {meta.compacted}); "
                    f"list again from the start",
                    details={"revision": at, "compactedRevision": meta.compacted},
                )
            if at == meta.revision:
                source: Any = ((k, json.loads(v)) for k, v in _fsm.iter_objects(txn, prefix, after))
            else:
                source = _fsm.objects_at(txn, prefix, at, after)
            items: list[_api.Obj] = []
            token = None
            for k, obj in source:
                if sel is not None and not sel.matches(obj["metadata"].get("labels") or {}):
                    continue
                if limit and len(items) == limit:
                    # One more match exists: hand out a token for the next page.
                    token = _encode_token(at, _fsm.key_of(items[-1]))
                    break
                items.append(obj)
                del k
        return _api.ListResult(items, _api.Revision(at), token)

    def watch(
        self,
        kind: str | None = None,
        herd: str | None = None,
        *,
        since: _api.Revision | None = None,
        selector: str | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[_api.WatchEvent]:
        return self._hub.watch(self._backend.read, kind, herd, since, selector, bookmark_interval)

    def resync(self) -> None:
        """Re-read the backend after its content was replaced (a Raft snapshot installed): watchers
        end with ``Gone`` and re-list. Call on the event loop."""
        with self._backend.read() as txn:
            meta = _fsm.read_meta(txn)
        self._hub.reset(meta.revision)
        self._compact_target = max(self._compact_target, meta.compacted)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._committer.close()
        self._hub.close()
        self._backend.close()

    # --- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise errors.Unavailable("the Barn is closed")

    async def _submit(self, cmd: dict[str, Any]) -> _fsm.ApplyResult:
        self._check_open()
        try:
            raw = _fsm.encode_command(cmd)
        except (TypeError, ValueError) as e:
            raise errors.Invalid(f"the object is not plain JSON: {e}") from e
        return await self._committer.submit(raw)

    def _on_committed(self, results: Any) -> None:
        for result in results:
            if result.changes:
                self._hub.publish(result.changes)
        head = self._hub.head
        # Compact in steps of a tenth of the retention, not on every write.
        if self._retention and head - self._compact_target > self._retention * 11 // 10:
            self._compact_target = _api.Revision(head - self._retention)
            self._committer.submit_nowait(
                _fsm.encode_command({"op": "compact", "revision": self._compact_target})
            )


ListResult = _api.ListResult


def _encode_token(revision: int, last_key: str) -> str:
    raw = json.dumps([revision, last_key]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str, prefix: str) -> tuple[_api.Revision, str]:
    try:
        revision, last_key = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(revision, int) or not isinstance(last_key, str):
            raise ValueError("bad token shape")
    except (ValueError, TypeError, binascii.Error) as e:
        raise errors.Invalid(f"invalid continue token {token[:40]!r}: {e}") from e
    if not last_key.startswith(prefix):
        raise errors.Invalid("the continue token belongs to a different list (kind or herd)")
    return _api.Revision(revision), last_key
