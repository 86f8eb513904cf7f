"""The Barn replicated on Raft: ``ReplicatedBarn`` = ``LocalBarn`` over a Raft committer.

    asyncio (API server)          tick thread (owns pysyncobj, the LMDB write txns)
    LocalBarn (store._local) --submit(bytes)--> Raft log (store._journal, fsync) -> commit
      <- on_committed + futures <- call_soon_threadsafe <- end of tick: _fsm.apply results,
                                                             one LMDB commit (no fsync)
    read  -> [barrier no-op round] -> LocalBarn read (LMDB read txn)
    watch -> LocalBarn's watch hub, fed after each tick's commit, on every replica

Writes sent to a follower are forwarded to the leader by pysyncobj; the result comes from the
follower's own apply, so it reads its own write. A write not confirmed in time, or whose leader
changed, raises ``OutcomeUnknown`` (it may still commit); one that surely did not commit raises
``Unavailable``. Peer traffic is sealed with AES-GCM under keys derived from a random cluster
secret (``store._raft_peer``), authenticated before anything is unpickled.
The state (``_fsm`` on ``_lmdb``) commits without fsync: the fsynced journal holds every entry
since the last snapshot, and a replica whose machine crashed while it ran rebuilds from them.
"""

from __future__ import annotations

import _socket
import asyncio
import builtins
import collections
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode
from pysyncobj.transport import TCPTransport

from runink.schemas import errors
from runink.store import _api, _commit, _fsm, _journal, _lmdb, _local, _raft_peer

# pysyncobj replaces socket.inet_ntop process-wide with a Windows-only stub on import; pyroute2
# (the agent's network namespaces) decodes addresses with it. Put the real one back.
socket.inet_ntop = _socket.inet_ntop

log = logging.getLogger(__name__)

SECRET_FILE = "cluster.secret"
_SNAP_MAGIC = b"RUNINK-SNAP-2\n"
_BARRIER = b'{"op":"barrier"}'
_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER
# Failures after which the command may still commit somewhere: the caller must re-read.
_MAYBE = {FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME}


def ensure_secret(data_dir: str, *, create: bool = True) -> str:
    """The cluster secret in ``data_dir`` (mode 0600), made with 256 random bits at bootstrap."""
    path = os.path.join(data_dir, SECRET_FILE)
    if not os.path.exists(path):
        if not create:
            raise errors.Unavailable(f"no cluster secret at {path}: copy it from a member")
        os.makedirs(data_dir, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    with open(path) as f:
        return f.read().strip()


def write_secret(data_dir: str, secret: str) -> None:
    """Store a secret received out of band (``runink cluster join --token``), mode 0600."""
    os.makedirs(data_dir, exist_ok=True)
    fd = os.open(os.path.join(data_dir, SECRET_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """How one replica runs. Timings are tuned for a LAN/loopback; see docs/benchmarks/raft.md."""

    data_dir: str
    self_addr: str
    peers: tuple[str, ...]
    secret: str
    write_timeout: float = 5.0
    read_timeout: float = 5.0
    append_entries_period: float = 0.05
    election_timeout: tuple[float, float] = (0.4, 0.9)
    leader_fallback_timeout: float = 1.0
    snapshot_entries: int = 20000
    idle_tick: float = 0.05
    fault_injection: bool = False
    retention: int = _local.DEFAULT_RETENTION


@dataclass(frozen=True, slots=True)
class MemberStatus:
    address: str
    connected: bool
    match_index: int | None
    lag: int | None


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    self_addr: str
    leader: str | None
    is_leader: bool
    term: int
    commit_index: int
    applied_index: int
    revision: int
    members: list[MemberStatus] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "self": self.self_addr,
            "leader": self.leader,
            "is_leader": self.is_leader,
            "term": self.term,
            "commit_index": self.commit_index,
            "applied_index": self.applied_index,
            "revision": self.revision,
            "members": [
                {
                    "address": m.address,
                    "connected": m.connected,
                    "match_index": m.match_index,
                    "lag": m.lag,
                }
                for m in self.members
            ],
        }


# Messages that acknowledge or promise nothing about this node's log may leave before its fsync.
_NO_FLUSH = frozenset({"append_entries", "apply_command", "apply_command_response"})


class _Transport(TCPTransport):  # type: ignore[misc]
    """TCP transport that (1) makes the journal durable before a message acknowledging entries or
    granting a vote leaves, (2) can drop traffic to/from chosen peers (fault injection) and (3)
    frames every connection with ``_raft_peer`` (AES-GCM, no per-message zlib).

    Acks (``next_node_idx``) written while entries are pending are held and sent by
    ``release()`` after one fsync for the whole poll round: group commit on followers.
    """

    journal: _journal.FileJournal | None = None
    blocked: frozenset[str] = frozenset()
    held: list[tuple[Any, Any]]

    def send(self, node: Any, message: Any) -> bool:
        if node.id in self.blocked:
            return False
        kind = message.get("type")
        if self.journal is not None and kind not in _NO_FLUSH:
            if kind == "next_node_idx" and self.journal.pending:
                self.__dict__.setdefault("held", []).append((node, message))
                return True
            self.journal.flush()
        ok: bool = super().send(node, message)
        return ok

    def release(self) -> None:
        """Send the held acks; call right after ``journal.flush()``."""
        held = self.__dict__.get("held")
        if held:
            self.held = []
            for node, message in held:
                if node.id not in self.blocked:
                    super().send(node, message)

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None:
            _raft_peer.adopt(conn)

    def _onNewIncomingConnection(self, conn: Any) -> None:
        _raft_peer.adopt(conn)
        super()._onNewIncomingConnection(conn)

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        if node is not None and node.id in self.blocked:
            return
        super()._onMessageReceived(node, message)


def _noop() -> None:
    pass


def _boot_id() -> str:
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


class _StateBackend:
    """The replica's LMDB state (``_lmdb.LmdbBackend``, commits without fsync) behind a lock, so
    installing a snapshot can swap the environment under the event loop's readers.

    ``<data-dir>/state.boot`` holds the boot id while the replica runs. Found at start with another
    boot id, the machine crashed under us: unsynced commits may be torn, so the state is dropped
    and rebuilt from the last snapshot and the journal (both fsynced).
    """

    threaded = True

    def __init__(self, path: str) -> None:
        self.path = path
        self._marker = path + ".boot"
        self._lock = threading.Lock()
        boot = _boot_id()
        if os.path.exists(self._marker):
            with open(self._marker) as f:
                if f.read().strip() != boot:
                    log.warning("machine restarted since %s was last synced: rebuilding it", path)
                    shutil.rmtree(path, ignore_errors=True)
        _write_durably(self._marker, boot.encode())
        self._b = _lmdb.LmdbBackend(path, sync=False)

    @contextlib.contextmanager
    def read(self) -> Iterator[_fsm.ReadTxn]:
        with self._lock, self._b.read() as txn:
            yield txn

    @contextlib.contextmanager
    def write(self) -> Iterator[_fsm.WriteTxn]:
        with self._lock, self._b.write() as txn:
            yield txn

    def begin_write(self) -> _lmdb.LmdbWriteTxn:
        return self._b.begin_write()

    def copy_to(self, fd: int) -> None:
        self._b.copy_to(fd)

    def replace_with(self, image_path: str) -> None:
        """Swap in the LMDB image at ``image_path``: staged beside ours, fsynced, renamed."""
        staging = self.path + ".new"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        os.rename(image_path, os.path.join(staging, "data.mdb"))
        _fsync_path(os.path.join(staging, "data.mdb"))
        with self._lock:
            self._b.close()
            old = self.path + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(self.path, old)
            os.rename(staging, self.path)
            _fsync_path(os.path.dirname(self.path) or ".")
            shutil.rmtree(old, ignore_errors=True)
            self._b = _lmdb.LmdbBackend(self.path, sync=False)

    def close(self) -> None:
        with self._lock:
            self._b.flush()
            self._b.close()
        os.unlink(self._marker)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    _fsync_path(os.path.dirname(path) or ".")


class _RaftCommitter:
    """``_commit.Committer`` for ``LocalBarn``: commands go through the Raft log; ``on_committed``
    sees every entry applied on this replica, whoever proposed it."""

    def __init__(self, barn: ReplicatedBarn) -> None:
        self._barn = barn
        self.on_committed: _commit.OnCommitted = lambda results: None

    def start(self, on_committed: _commit.OnCommitted) -> None:
        self.on_committed = on_committed

    async def submit(self, command: bytes) -> _fsm.ApplyResult:
        return await self._barn._propose(command)

    def submit_nowait(self, command: bytes) -> None:
        # Automatic compaction: every replica's LocalBarn decides it, only the leader proposes.
        if self._barn.is_leader:
            fut = self._barn._submit(command)
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def close(self) -> None:
        pass  # the ReplicatedBarn stops the tick thread before closing its LocalBarn


class _Node(SyncObj):  # type: ignore[misc]
    """The pysyncobj object: one replicated method carrying our JSON command bytes."""

    def __init__(
        self,
        apply: Callable[[bytes, int], Any],
        cipher: _raft_peer.PeerCipher,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self._apply_fn = apply
        self._cipher = cipher  # before SyncObj.__init__: its transport reads ``encryptor``
        super().__init__(*args, **kwargs)

    # pysyncobj's own Fernet is off (no ``password``); peers get our AES-GCM cipher instead.
    @property
    def encryptor(self) -> _raft_peer.PeerCipher:
        return self._cipher

    def _getEncryptor(self) -> _raft_peer.PeerCipher:
        return self._cipher

    def _checkCommandsToApply(self) -> None:
        # With appendEntriesUseBatch=False pysyncobj sends an AppendEntries round per queued
        # command; under concurrent load that is one pickle+encrypt+send per command per peer.
        # Drain the whole queue first, then send one round carrying every new entry.
        before = len(self._SyncObj__raftLog)
        self._SyncObj__sendAppendEntries = _noop
        try:
            super()._checkCommandsToApply()
        finally:
            del self._SyncObj__sendAppendEntries
        if len(self._SyncObj__raftLog) != before and self._SyncObj__raftState == _LEADER:
            self._SyncObj__sendAppendEntries()

    @replicated  # type: ignore[untyped-decorator]
    def apply(self, command: bytes) -> Any:
        # pysyncobj bumps raftLastApplied after this returns: +1 is this entry's log index.
        return self._apply_fn(command, self.raftLastApplied + 1)


class ReplicatedBarn:
    """A Barn replica. Create with ``await ReplicatedBarn.open(config)`` on the running loop."""

    def __init__(self, config: RaftConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._cfg = config
        self._loop = loop
        os.makedirs(config.data_dir, exist_ok=True)
        self._backend = _StateBackend(os.path.join(config.data_dir, "state"))
        self._committer = _RaftCommitter(self)
        self._local = _local.LocalBarn(
            self._backend, committer=self._committer, retention=config.retention
        )
        self._journal = _journal.FileJournal(os.path.join(config.data_dir, "raftlog"))
        self._txn: _lmdb.LmdbWriteTxn | None = None  # the tick's open state transaction
        self._applied: list[_fsm.ApplyResult] = []  # applied this tick, not yet delivered
        self._applied_index = 0
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._ready_replies: list[tuple[asyncio.Future[Any], Any]] = []
        self._on_tick_calls: collections.deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = (
            collections.deque()
        )
        self._barrier_inflight: asyncio.Future[None] | None = None
        self._barrier_next: asyncio.Future[None] | None = None
        self._leader_subs: list[asyncio.Queue[bool]] = []
        self._is_leader = False
        self._stopping = threading.Event()
        self.snapshots_installed = 0

        conf = SyncObjConf(
            autoTick=False,
            appendEntriesUseBatch=False,
            appendEntriesPeriod=config.append_entries_period,
            raftMinTimeout=config.election_timeout[0],
            raftMaxTimeout=config.election_timeout[1],
            leaderFallbackTimeout=config.leader_fallback_timeout,
            connectionTimeout=max(1.0, config.election_timeout[1]),
            connectionRetryTime=0.2,
            commandsWaitLeader=True,
            dynamicMembershipChange=True,
            password=None,  # peer traffic is sealed by _raft_peer (see _Node.encryptor)
            fullDumpFile=os.path.join(config.data_dir, "snapshot"),
            serializer=self._serialize,
            deserializer=self._deserialize,
            logCompactionMinEntries=config.snapshot_entries,
            logCompactionMinTime=10**9,
            onStateChanged=self._on_state_changed,
        )
        _journal.stage(self._journal)
        transport_cls = type("_Tr", (_Transport,), {"journal": self._journal})
        self._node = _Node(
            self._apply,
            _raft_peer.PeerCipher(config.secret),
            config.self_addr,
            list(config.peers),
            conf,
            transportClass=transport_cls,
        )
        self._transport: _Transport = self._node._SyncObj__transport
        self._node.addOnTickCallback(self._end_of_tick)
        self._thread = threading.Thread(target=self._tick_loop, name="raft-tick", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, config: RaftConfig) -> ReplicatedBarn:
        return cls(config, asyncio.get_running_loop())

    # -- tick thread -----------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        # Our own tick. With peers, every step of a write wakes the poller (the command pipe, a
        # peer's reply), so it can always block. Alone, the leader advances its commit index
        # only on the next tick: do not block while a write is in flight (the 50 ms tick is
        # what limits pysyncobj to ~10 writes/s; research/store.md 1.2). Spinning with peers
        # would also starve the event loop's thread of the GIL.
        self._journal.batching = True
        try:
            while not self._stopping.is_set():
                self._journal.flush()
                self._transport.release()
                alone = not self._node.otherNodes
                # A short sleep, not 0: a busy loop would keep the GIL from the event loop.
                self._node.doTick(0.0002 if alone and self._inflight else self._cfg.idle_tick)
        finally:
            self._journal.flush()
            self._commit_state()
            self._node._doDestroy()

    def _apply(self, command: bytes, index: int) -> _fsm.ApplyResult | None:
        """The replicated method's body (tick thread): apply one committed entry."""
        command = bytes(command)
        if command == _BARRIER:
            return None  # a read barrier changes nothing (and needs no applied_index)
        if self._txn is None:
            self._txn = self._backend.begin_write()
        result = _fsm.apply(command, self._txn, index)
        self._applied.append(result)
        return result

    def _commit_state(self) -> None:
        """Commit this tick's state transaction and hand its results to the event loop: the
        watch hub first, then the proposers (so a writer's own watch already has its event)."""
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.commit()
        applied, self._applied = self._applied, []
        replies, self._ready_replies = self._ready_replies, []
        if applied or replies:
            self._loop.call_soon_threadsafe(self._deliver, applied, replies)

    def _end_of_tick(self) -> None:
        # Deliver before the fsync: every entry applied in this tick was appended in an earlier
        # tick (pysyncobj computes the commit index before it appends new commands, and appends
        # received entries during the poll), and every doTick starts with a flushed journal
        # (_tick_loop), so the results are durable here already. The fsync below covers only the
        # entries appended in this tick; leaving it after the delivery takes one fsync off each
        # write's latency.
        self._commit_state()
        self._journal.flush()
        self._transport.release()
        while self._on_tick_calls:
            fn, fut = self._on_tick_calls.popleft()
            try:
                self._loop.call_soon_threadsafe(_settle, fut, fn(), None)
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                self._loop.call_soon_threadsafe(_settle, fut, None, exc)

    def _on_state_changed(self, old: int, new: int) -> None:
        if (old == _LEADER) != (new == _LEADER):
            self._loop.call_soon_threadsafe(self._publish_leader, new == _LEADER)

    def _serialize(self, tmp_file: str, raft_data: Any) -> None:
        """Snapshot: commit, then copy the LMDB environment; a CRC32 of the image guards it."""
        last, prev, cluster = raft_data
        self._journal.flush()
        self._commit_state()
        image = tmp_file + ".image"
        with open(image, "wb") as f:
            self._backend.copy_to(f.fileno())
        crc, size = _crc_file(image)
        header = json.dumps(
            {
                "last": [bytes(last[0]).hex(), last[1], last[2]],
                "prev": [bytes(prev[0]).hex(), prev[1], prev[2]],
                "cluster": sorted(n.id for n in cluster),
                "crc32": crc,
                "size": size,
            }
        ).encode()
        with open(tmp_file, "wb") as out, open(image, "rb") as src:
            out.write(_SNAP_MAGIC + struct.pack(">I", len(header)) + header)
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.unlink(image)

    def _deserialize(self, file_name: str) -> tuple[Any, Any, Any]:
        try:
            with open(file_name, "rb") as f:
                if f.read(len(_SNAP_MAGIC)) != _SNAP_MAGIC:
                    raise ValueError("not a Runink snapshot")
                (n,) = struct.unpack(">I", f.read(4))
                header = json.loads(f.read(n))
                last = (bytes.fromhex(header["last"][0]), header["last"][1], header["last"][2])
                prev = (bytes.fromhex(header["prev"][0]), header["prev"][1], header["prev"][2])
                self._journal.flush()
                self._commit_state()
                with self._backend.read() as txn:
                    applied = _fsm.read_meta(txn).applied_index
                if last[1] > applied:
                    # A lagging (or rebuilt) replica installs the leader's state.
                    image = file_name + ".image"
                    with open(image, "wb") as out:
                        shutil.copyfileobj(f, out, 1 << 20)
                    if _crc_file(image) != (header["crc32"], header["size"]):
                        raise ValueError("snapshot image checksum mismatch")
                    self._backend.replace_with(image)
                    self.snapshots_installed += 1
                    self._loop.call_soon_threadsafe(self._local.resync)
            cluster = {TCPNode(a) for a in header["cluster"]}
            return last, prev, cluster
        except Exception:
            # pysyncobj would log and carry on with an inconsistent state: stop instead.
            log.critical("cannot load Raft snapshot %s: stopping", file_name, exc_info=True)
            os._exit(70)

    # -- asyncio side ----------------------------------------------------------------------------

    def _deliver(
        self,
        applied: Sequence[_fsm.ApplyResult],
        replies: Sequence[tuple[asyncio.Future[Any], Any]],
    ) -> None:
        if applied:
            self._committer.on_committed(applied)
        for fut, value in replies:
            _settle(fut, value, None)

    def _publish_leader(self, is_leader: bool) -> None:
        self._is_leader = is_leader
        for q in self._leader_subs:
            q.put_nowait(is_leader)

    def _submit(self, command: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()

        def callback(result: Any, err: int) -> None:  # tick thread
            with self._inflight_lock:
                self._inflight -= 1
            if err == FAIL_REASON.SUCCESS:
                self._ready_replies.append((fut, result))  # released after the state commit
            else:
                self._loop.call_soon_threadsafe(_settle, fut, None, _fail(err))

        with self._inflight_lock:
            self._inflight += 1
        self._node.apply(command, callback=callback)
        return fut

    async def _propose(self, command: bytes) -> _fsm.ApplyResult:
        if self._stopping.is_set():
            raise errors.Unavailable("this replica is shutting down")
        fut = self._submit(command)
        try:
            async with asyncio.timeout(self._cfg.write_timeout):
                result: _fsm.ApplyResult = await fut
        except TimeoutError:
            raise errors.OutcomeUnknown(
                f"write not confirmed within {self._cfg.write_timeout}s; it may still commit: "
                "re-read before retrying",
                details={"leader": self._leader_addr()},
            ) from None
        return result

    async def barrier(self) -> None:
        """Return once this replica has applied every write committed before the call (one shared
        replicated no-op round; callers arriving during a round wait for the next one)."""
        if self._barrier_inflight is None:
            fut = self._start_barrier(None)
        else:
            if self._barrier_next is None:
                self._barrier_next = self._loop.create_future()
            fut = self._barrier_next
        try:
            async with asyncio.timeout(self._cfg.read_timeout):
                await asyncio.shield(fut)
        except TimeoutError:
            raise errors.Unavailable(
                "no quorum confirmed a linearizable read in time",
                details={"leader": self._leader_addr()},
            ) from None

    def _start_barrier(self, target: asyncio.Future[None] | None) -> asyncio.Future[None]:
        done: asyncio.Future[None] = target or self._loop.create_future()
        self._barrier_inflight = done
        raw = self._submit(_BARRIER)

        def finished(f: asyncio.Future[Any]) -> None:
            self._barrier_inflight = None
            if not done.done():
                exc = f.exception() if not f.cancelled() else errors.Unavailable("cancelled")
                if exc is None:
                    done.set_result(None)
                else:
                    done.set_exception(exc)
                    done.exception()  # waiters may all have timed out: mark it retrieved
            nxt, self._barrier_next = self._barrier_next, None
            if nxt is not None:
                self._start_barrier(nxt)

        raw.add_done_callback(finished)
        # Give up on this round after the read timeout so a later reader can start a fresh one.
        self._loop.call_later(self._cfg.read_timeout, lambda: raw.done() or raw.cancel())
        return done

    def _leader_addr(self) -> str | None:
        leader = self._node._getLeader()
        return None if leader is None else str(leader.id)

    async def _on_tick(self, fn: Callable[[], Any]) -> Any:
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._on_tick_calls.append((fn, fut))
        self._node._SyncObj__pipeNotifier.notify()
        async with asyncio.timeout(5):
            return await fut

    # -- Barn protocol (LocalBarn does the work; linearizable reads wait for a barrier) ----------

    @property
    def revision(self) -> _api.Revision:
        return self._local.revision

    async def create(self, obj: _api.Obj) -> _api.Obj:
        return await self._local.create(obj)

    async def update(self, obj: _api.Obj) -> _api.Obj:
        return await self._local.update(obj)

    async def update_status(self, obj: _api.Obj) -> _api.Obj:
        return await self._local.update_status(obj)

    async def delete(
        self, kind: str, name: str, herd: str | None = None, *, resource_version: str | None = None
    ) -> _api.Obj:
        return await self._local.delete(kind, name, herd, resource_version=resource_version)

    async def get(
        self, kind: str, name: str, herd: str | None = None, *, linearizable: bool = False
    ) -> _api.Obj:
        if linearizable:
            await self.barrier()
        return await self._local.get(kind, name, herd)

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
        if linearizable:
            await self.barrier()
        return await self._local.list(
            kind, herd, selector=selector, limit=limit, continue_token=continue_token
        )

    def watch(
        self,
        kind: str | None = None,
        herd: str | None = None,
        *,
        since: _api.Revision | None = None,
        selector: str | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[_api.WatchEvent]:
        return self._local.watch(
            kind, herd, since=since, selector=selector, bookmark_interval=bookmark_interval
        )

    async def compact(self, revision: _api.Revision) -> None:
        await self._local.compact(revision)

    async def close(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)
        await asyncio.sleep(0)  # run the last _deliver scheduled by the tick thread
        await self._local.close()

    # -- replication-specific API ------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    async def leadership(self) -> AsyncIterator[bool]:
        """Yield whether this replica leads now, then on each change (the LeaderElection interface
        for the controller manager). A leader that loses its quorum steps down after
        ``leader_fallback_timeout``."""
        q: asyncio.Queue[bool] = asyncio.Queue()
        self._leader_subs.append(q)
        try:
            current = self._is_leader
            yield current
            while True:
                value = await q.get()
                if value != current:
                    current = value
                    yield value
        finally:
            self._leader_subs.remove(q)

    async def status(self) -> ClusterStatus:
        def read() -> ClusterStatus:
            st = self._node.getStatus()
            leader = st["leader"]
            members = []
            for node in sorted(self._node.otherNodes, key=lambda n: n.id):
                match = st.get("match_idx_server_" + node.id) if st["state"] == _LEADER else None
                members.append(
                    MemberStatus(
                        node.id,
                        bool(st.get("partner_node_status_server_" + node.id)),
                        match,
                        None if match is None else max(0, st["commit_idx"] - match),
                    )
                )
            return ClusterStatus(
                self._cfg.self_addr,
                None if leader is None else str(leader.id),
                st["state"] == _LEADER,
                st["raft_term"],
                st["commit_idx"],
                st["last_applied"],
                int(self._local.revision),
                members,
            )

        result: ClusterStatus = await self._on_tick(read)
        return result

    async def add_member(self, address: str) -> None:
        """Add a voting member (one at a time; start it with the current members as peers)."""
        await self._membership(self._node.addNodeToCluster, address)

    async def remove_member(self, address: str) -> None:
        await self._membership(self._node.removeNodeFromCluster, address)

    async def _membership(self, change: Callable[..., None], address: str) -> None:
        fut = self._submit_call(lambda cb: change(address, callback=cb))
        try:
            async with asyncio.timeout(self._cfg.write_timeout):
                await fut
        except TimeoutError:
            raise errors.OutcomeUnknown(f"membership change for {address} not confirmed") from None

    def _submit_call(
        self, call: Callable[[Callable[[Any, int], None]], None]
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()

        def callback(result: Any, err: int) -> None:
            self._loop.call_soon_threadsafe(
                _settle, fut, result, None if err == FAIL_REASON.SUCCESS else _fail(err)
            )

        call(callback)
        return fut

    async def digest(self) -> tuple[int, str]:
        """(revision, digest of objects and revision log) after a barrier: equal on replicas that
        applied the same history."""
        await self.barrier()
        h = hashlib.sha256()
        with self._backend.read() as txn:
            rev = _fsm.read_meta(txn).revision
            for table in ("objects", "log"):
                for k, v in txn.scan(table, b""):
                    h.update(k)
                    h.update(v)
        return int(rev), h.hexdigest()

    def set_partition(self, blocked: builtins.list[str]) -> None:
        """Fault injection (tests): drop all traffic with these peer addresses."""
        if not self._cfg.fault_injection:
            raise errors.Forbidden("fault injection is disabled on this replica")
        self._transport.blocked = frozenset(blocked)


def _crc_file(path: str) -> tuple[int, int]:
    crc, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return crc, size


def admin(address: str, secret: str, command: builtins.list[str], timeout: float = 10.0) -> Any:
    """One admin command to the replica whose Raft port is ``address``, over the same encrypted
    channel as peer traffic (so only holders of the cluster secret can ask): ``["status"]`` (a
    dict: leader, term, commit/applied index, partners, match indexes), ``["add", addr]`` or
    ``["remove", addr]`` (a membership change, forwarded to the leader). Blocking."""
    from pysyncobj.utility import TcpUtility, UtilityException

    utility = TcpUtility(None, timeout)
    conn = utility._TcpUtility__connection
    conn.encryptor = _raft_peer.PeerCipher(secret)
    _raft_peer.adopt(conn)
    try:
        return utility.executeCommand(address, command)
    except UtilityException as e:
        raise errors.Unavailable(f"replica {address} did not answer {command[0]!r}: {e}") from e


def status_from_admin(raw: dict[str, Any]) -> ClusterStatus:
    """``ClusterStatus`` from ``admin(addr, secret, ["status"])``'s reply."""
    leader = raw.get("leader")
    is_leader = raw.get("state") == _LEADER
    prefix = "partner_node_status_server_"
    members = []
    for key in sorted(k for k in raw if k.startswith(prefix)):
        addr = key[len(prefix) :]
        match = raw.get("match_idx_server_" + addr) if is_leader else None
        members.append(
            MemberStatus(
                addr,
                bool(raw[key]),
                match,
                None if match is None else max(0, int(raw["commit_idx"]) - int(match)),
            )
        )
    return ClusterStatus(
        str(raw.get("self")),
        None if leader is None else str(leader),
        is_leader,
        int(raw.get("raft_term", 0)),
        int(raw.get("commit_idx", 0)),
        int(raw.get("last_applied", 0)),
        -1,  # the store revision is not part of pysyncobj's status
        members,
    )


def _fail(err: int) -> errors.RuninkError:
    if err in _MAYBE:
        return errors.OutcomeUnknown(
            f"the leader changed before the write was confirmed (pysyncobj reason {err}); "
            "it may still commit: re-read before retrying"
        )
    return errors.Unavailable(f"the write was not committed (pysyncobj reason {err}): retry")


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return  # the caller gave up (timeout/cancel): the late outcome has nowhere to go
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
