"""The wire codec of Raft peer traffic: AES-256-GCM framing for pysyncobj's TCP connections.

pysyncobj frames every peer message as ``pickle -> zlib -> Fernet``; Fernet (AES-CBC + HMAC +
base64, the timestamp parsed twice) and zlib cost more CPU on a replica's tick thread than they
save on a LAN (docs/benchmarks/raft.md). ``store._raft`` swaps in ``PeerCipher`` as the node's
encryptor and ``Connection`` as the class of every peer/admin connection, so a message is

    len(4) | 0x01 | salt(16) | counter(8) | AES-GCM(key(salt), nonce=counter, flag(1) + payload)

authenticated *before* it is unpickled. ``key(salt)`` = HKDF-SHA256(cluster secret, salt): each
sender picks a random salt and counts nonces from 1, so no (key, nonce) pair ever repeats; a
receiver requires one salt and strictly increasing counters per connection (no replay, reorder or
splice within a connection; pysyncobj's per-connection random keys stop replays across them).
"""

from __future__ import annotations

import collections
import itertools
import os
import struct
import zlib
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pysyncobj import pickle as _ppickle
from pysyncobj.tcp_connection import TcpConnection

VERSION = 1
_HEADER = struct.Struct(">B16sQ")  # version, sender salt, nonce counter
_LEN = struct.Struct("i")  # pysyncobj's frame length prefix (native int)
_INFO = b"runink raft peer traffic v1"
_RAW, _ZLIB = b"\x00", b"\x01"
#: Payloads at least this large (snapshot chunks) are still compressed; Raft batches are not.
COMPRESS_MIN = 1 << 16
_KEYS_KEPT = 64


class AuthenticationError(Exception):
    """A frame that was not sealed with the cluster secret (or was replayed/reordered)."""


def _derive(secret: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO)
    return AESGCM(hkdf.derive(secret))


class PeerCipher:
    """Seals and opens frames with keys derived from the cluster secret. One per process side
    (a replica, an admin client); used from one thread (the tick thread) at a time.

    It also satisfies what pysyncobj asks of an encryptor (truthiness; ``encrypt_at_time``,
    ``extract_timestamp``, ``decrypt``), which only ``Connection``'s bypassed code would call.
    """

    def __init__(self, secret: str | bytes) -> None:
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        self._salt = os.urandom(16)
        self._aead = _derive(self._secret, self._salt)
        self._counter = itertools.count(1)
        self._keys: collections.OrderedDict[bytes, AESGCM] = collections.OrderedDict()
        self._keys[self._salt] = self._aead

    def seal(self, plaintext: bytes) -> bytes:
        counter = next(self._counter)
        header = _HEADER.pack(VERSION, self._salt, counter)
        return header + self._aead.encrypt(b"\0\0\0\0" + header[17:], plaintext, header)

    def open(self, frame: bytes) -> tuple[bytes, int, bytes]:
        """``(plaintext, counter, salt)`` of an authentic frame; ``AuthenticationError`` else."""
        if len(frame) < _HEADER.size + 16:
            raise AuthenticationError("short frame")
        version, salt, counter = _HEADER.unpack_from(frame)
        if version != VERSION:
            raise AuthenticationError(f"unknown peer frame version {version}")
        aead = self._keys.get(salt)
        fresh = aead is None
        if aead is None:
            aead = _derive(self._secret, salt)
        header = frame[: _HEADER.size]
        try:
            plain = aead.decrypt(b"\0\0\0\0" + header[17:], frame[_HEADER.size :], header)
        except InvalidTag:
            raise AuthenticationError("peer frame failed authentication") from None
        if fresh:  # cache only keys that authenticated a frame (no growth from forgeries)
            self._keys[salt] = aead
            while len(self._keys) > _KEYS_KEPT:
                self._keys.popitem(last=False)
        return plain, counter, salt

    # pysyncobj's encryptor interface (Connection never calls these; kept for completeness).
    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        return self.seal(data)

    def extract_timestamp(self, token: bytes) -> int:
        return self.open(token)[1]

    def decrypt(self, token: bytes) -> bytes:
        return self.open(token)[0]


def encode(message: Any, cipher: PeerCipher) -> bytes:
    """One length-prefixed frame carrying ``message``."""
    payload = _ppickle.dumps(message)
    big = len(payload) >= COMPRESS_MIN
    body = _ZLIB + zlib.compress(payload, 1) if big else _RAW + payload
    frame = cipher.seal(body)
    return _LEN.pack(len(frame)) + frame


def decode(frame: bytes, cipher: PeerCipher) -> tuple[Any, int, bytes]:
    """``(message, counter, salt)``: authenticated first, unpickled only then."""
    plain, counter, salt = cipher.open(frame)
    flag, payload = plain[:1], plain[1:]
    if flag == _ZLIB:
        payload = zlib.decompress(payload)
    elif flag != _RAW:
        raise AuthenticationError("unknown payload flag")  # authentic, but not ours: drop it
    return _ppickle.loads(payload), counter, salt


class Connection(TcpConnection):  # type: ignore[misc]
    """pysyncobj's ``TcpConnection`` with our framing when its ``encryptor`` is a ``PeerCipher``.

    Installed by swapping ``__class__`` on connections the transport (or the admin utility)
    creates, so it adds no state of its own beyond the replay guard, reset on disconnect.
    """

    _peer_salt: bytes | None = None
    _peer_counter: int = 0

    def send(self, message: Any) -> None:
        cipher = self.encryptor
        if not isinstance(cipher, PeerCipher):
            super().send(message)
            return
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        self._TcpConnection__writeBuffer += encode(message, cipher)
        self._TcpConnection__trySendBuffer()

    def disconnect(self) -> None:
        self._peer_salt = None
        self._peer_counter = 0
        super().disconnect()

    def _TcpConnection__processParseMessage(self) -> Any:
        cipher = self.encryptor
        if not isinstance(cipher, PeerCipher):
            return self._parse_stock()
        buf: bytes = getattr(self, "_TcpConnection__readBuffer")  # noqa: B009 - pysyncobj's private
        if len(buf) < 4:
            return None
        (n,) = _LEN.unpack_from(buf)
        if len(buf) - 4 < n:
            return None
        try:
            message, counter, salt = decode(buf[4 : 4 + n], cipher)
            if self._peer_salt is None:
                self._peer_salt = salt
            elif salt != self._peer_salt or counter <= self._peer_counter:
                raise AuthenticationError("replayed or reordered peer frame")
            self._peer_counter = counter
            if self.recvRandKey:
                rand_key, message = message
                if rand_key != self.recvRandKey:
                    raise AuthenticationError("frame from another connection")
        except Exception:  # noqa: BLE001 - any bad frame ends the connection, as pysyncobj does
            self.disconnect()
            return None
        self._TcpConnection__readBuffer = buf[4 + n :]
        return message

    def _parse_stock(self) -> Any:
        return TcpConnection._TcpConnection__processParseMessage(self)


def adopt(conn: Any) -> None:
    """Make a pysyncobj ``TcpConnection`` use this module's framing (when it has a PeerCipher)."""
    if type(conn) is TcpConnection:
        conn.__class__ = Connection
