"""``_fsm.apply`` as a replica sees it: command bytes, a backend transaction, a Raft index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runink.store import _commit, _fsm, _lmdb, _memory


@pytest.fixture(params=["memory", "lmdb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_commit.Backend]:
    b: _commit.Backend = (
        _memory.MemoryBackend() if request.param == "memory" else _lmdb.LmdbBackend(tmp_path)
    )
    yield b
    b.close()


def create(name: str) -> bytes:
    obj = {"kind": "Node", "metadata": {"name": name}, "spec": {}}
    return _fsm.encode_command(
        {"op": "create", "object": obj, "uid": "u-" + name, "timestamp": "t"}
    )


def test_replayed_raft_entries_are_applied_once(backend: _commit.Backend) -> None:
    with backend.write() as txn:
        assert _fsm.apply(create("a"), txn, index=5).revision == 1
        # A failed command still consumes its index, but no revision.
        failed = _fsm.apply(create("a"), txn, index=6)
        assert failed.error is not None and failed.revision == 1
    with backend.write() as txn:
        for index in (4, 5, 6):  # the journal replays what LMDB already holds
            assert _fsm.apply(create("b"), txn, index=index).skipped
        assert _fsm.apply(create("b"), txn, index=7).revision == 2
    with backend.read() as txn:
        meta = _fsm.read_meta(txn)
    assert (meta.revision, meta.applied_index) == (2, 7)


def test_same_commands_give_same_bytes_on_every_backend(tmp_path: Path) -> None:
    replicas = [_memory.MemoryBackend(), _lmdb.LmdbBackend(tmp_path)]
    commands = [create("a"), create("b"), create("a"), _fsm.encode_command({"op": "nope"})]
    dumps = []
    for b in replicas:
        with b.write() as txn:
            results = [_fsm.apply(c, txn, index=i + 1) for i, c in enumerate(commands)]
        with b.read() as txn:
            dumps.append([list(txn.scan(t, b"")) for t in ("objects", "log", "meta")])
        assert [type(r.error).__name__ for r in results] == [
            "NoneType",
            "NoneType",
            "AlreadyExists",
            "Invalid",
        ]
        b.close()
    assert dumps[0] == dumps[1]


def test_a_tick_spanning_transaction_commits_or_aborts_as_a_whole(tmp_path: Path) -> None:
    backend = _lmdb.LmdbBackend(tmp_path)
    try:
        txn = backend.begin_write()
        _fsm.apply(create("a"), txn, index=1)
        txn.abort()
        txn = backend.begin_write()
        _fsm.apply(create("b"), txn, index=1)
        _fsm.apply(create("c"), txn, index=2)
        txn.commit()
        with backend.read() as r:
            assert [k for k, _ in r.scan("objects", b"")] == [b"Node\x00\x00b", b"Node\x00\x00c"]
            assert _fsm.read_meta(r).applied_index == 2
    finally:
        backend.close()
