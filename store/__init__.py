"""runink.store: the Barn, Runink's versioned object store (DESIGN.md, "The Barn").

``open_local(path)`` gives the embedded, durable single-node Barn on LMDB; ``open_memory()`` the
same semantics in memory, for tests. Both return a ready ``LocalBarn`` (``await barn.close()``).
``ReplicatedBarn.open(RaftConfig(...))`` gives one replica of the Raft-replicated Barn (same
protocol, plus ``leadership()``, ``status()``, ``add_member``/``remove_member``); ``raft_admin``
asks a replica's Raft port directly (status, membership) with the cluster secret.
``open_lineage_store(path)`` and ``open_annotation_store(path)`` give the governance stores, each
on an LMDB environment of its own beside the Barn (derived, high-volume data: not the Raft log).
Everything else here is private; the Raft adapter reuses ``_fsm``, ``_lmdb`` and ``_local``.
"""

from __future__ import annotations

import os

from runink.store import _lmdb, _local, _memory
from runink.store._annotations import (
    AnnotationPage,
    AnnotationStore,
    LmdbAnnotationStore,
    open_annotation_store,
)
from runink.store._api import Barn, ListResult, Obj, ObjectKey, Revision, WatchEvent
from runink.store._lineage import LineageStore, open_lineage_store
from runink.store._local import LocalBarn
from runink.store._raft import (
    ClusterStatus,
    MemberStatus,
    RaftConfig,
    ReplicatedBarn,
    admin as raft_admin,
    ensure_secret,
    write_secret,
)


def open_local(path: str | os.PathLike[str], **options: int) -> LocalBarn:
    """The embedded Barn stored in the LMDB directory ``path`` (created if missing).

    ``options`` go to ``LocalBarn`` (``retention``, ``ring_size``, ``watch_buffer``).
    """
    return _local.LocalBarn(_lmdb.LmdbBackend(path), **options)  # type: ignore[arg-type]


def open_memory(**options: int) -> LocalBarn:
    """A Barn with the same semantics that keeps everything in memory (tests, demos)."""
    return _local.LocalBarn(_memory.MemoryBackend(), **options)  # type: ignore[arg-type]


__all__ = [
    "AnnotationPage",
    "AnnotationStore",
    "Barn",
    "ClusterStatus",
    "LineageStore",
    "ListResult",
    "LmdbAnnotationStore",
    "LocalBarn",
    "MemberStatus",
    "Obj",
    "ObjectKey",
    "RaftConfig",
    "ReplicatedBarn",
    "Revision",
    "WatchEvent",
    "ensure_secret",
    "open_annotation_store",
    "open_lineage_store",
    "open_local",
    "open_memory",
    "raft_admin",
    "write_secret",
]
