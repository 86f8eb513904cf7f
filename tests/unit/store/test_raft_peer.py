"""Raft peer framing (store._raft_peer): what a peer without the secret can and cannot make a
replica do, and that the admin channel works with it against a live single replica."""

from __future__ import annotations

import pickle
import socket
import struct

import pytest

from runink.store import _raft, _raft_peer


class _Boom:
    """Unpickling this would run code in the receiver."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("raise SystemExit('pickle from an unauthenticated peer was loaded')",))


def test_round_trip_between_two_processes_sharing_the_secret() -> None:
    a, b = _raft_peer.PeerCipher("s3cret"), _raft_peer.PeerCipher("s3cret")
    frame = _raft_peer.encode({"type": "append_entries", "entries": [(b"x" * 300, 7, 2)]}, a)
    message, counter, _ = _raft_peer.decode(frame[4:], b)
    assert message == {"type": "append_entries", "entries": [(b"x" * 300, 7, 2)]}
    assert counter == 1


def test_large_payloads_are_compressed_and_still_decode() -> None:
    a, b = _raft_peer.PeerCipher("k"), _raft_peer.PeerCipher("k")
    blob = b"\0" * (_raft_peer.COMPRESS_MIN * 4)
    frame = _raft_peer.encode(blob, a)
    assert len(frame) < len(blob) // 10
    assert _raft_peer.decode(frame[4:], b)[0] == blob


def test_a_pickle_without_the_secret_is_never_loaded() -> None:
    receiver = _raft_peer.PeerCipher("the-secret")
    forged = _raft_peer.encode(_Boom(), _raft_peer.PeerCipher("a-guess"))
    with pytest.raises(_raft_peer.AuthenticationError):
        _raft_peer.decode(forged[4:], receiver)
    # A raw pickle in a well-formed header is no better off.
    header = struct.pack(">B16sQ", _raft_peer.VERSION, b"\1" * 16, 1)
    with pytest.raises(_raft_peer.AuthenticationError):
        _raft_peer.decode(header + b"\0" + pickle.dumps(_Boom()) + b"\0" * 16, receiver)


def test_a_flipped_bit_is_rejected() -> None:
    a, b = _raft_peer.PeerCipher("k"), _raft_peer.PeerCipher("k")
    frame = bytearray(_raft_peer.encode({"term": 3}, a)[4:])
    frame[-20] ^= 1
    with pytest.raises(_raft_peer.AuthenticationError):
        _raft_peer.decode(bytes(frame), b)


def test_nonces_never_repeat_for_one_sender() -> None:
    a = _raft_peer.PeerCipher("k")
    headers = {_raft_peer.encode(i, a)[4:29] for i in range(1000)}
    assert len(headers) == 1000
    # Two processes with the same secret use different derived keys (their salts differ).
    assert _raft_peer.encode(0, _raft_peer.PeerCipher("k"))[5:21] != headers.pop()[1:17]


class _Poller:
    def subscribe(self, *args: object) -> None:
        pass

    def unsubscribe(self, *args: object) -> None:
        pass


def _receiving_connection(cipher: _raft_peer.PeerCipher) -> tuple[object, socket.socket]:
    """A pysyncobj connection adopted by _raft_peer, fed through a socketpair."""
    from pysyncobj.tcp_connection import TcpConnection

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = TcpConnection(_Poller(), socket=ours)
    conn.encryptor = cipher
    _raft_peer.adopt(conn)
    return conn, theirs


def test_a_replayed_frame_ends_the_connection() -> None:
    sender, receiver = _raft_peer.PeerCipher("k"), _raft_peer.PeerCipher("k")
    conn, theirs = _receiving_connection(receiver)
    got: list[object] = []
    conn.setOnMessageReceivedCallback(got.append)  # type: ignore[attr-defined]
    try:
        first, second = _raft_peer.encode("one", sender), _raft_peer.encode("two", sender)
        theirs.sendall(first + second + first)
        conn._TcpConnection__processConnection(conn.fileno(), 1)  # type: ignore[attr-defined]
        assert got == ["one", "two"]
        assert conn.state == 0  # type: ignore[attr-defined]  # DISCONNECTED by the replay
    finally:
        conn.disconnect()  # type: ignore[attr-defined]
        theirs.close()


async def test_admin_status_over_the_sealed_channel(tmp_path: object) -> None:
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    cfg = _raft.RaftConfig(data_dir=str(tmp_path), self_addr=addr, peers=(), secret="sekrit")
    barn = await _raft.ReplicatedBarn.open(cfg)
    try:
        import asyncio

        raw = await asyncio.to_thread(_raft.admin, addr, "sekrit", ["status"], 5.0)
        assert _raft.status_from_admin(raw).self_addr == addr
        with pytest.raises(Exception, match="did not answer"):
            await asyncio.to_thread(_raft.admin, addr, "wrong-secret", ["status"], 1.0)
    finally:
        await barn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
