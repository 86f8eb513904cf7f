"""Slice log lines shipped to Fluentd / Fluent Bit with the Forward protocol (at-least-once).

The agent's log pumps (agent/_logs.py) hand every line to `Forwarder.emit` (sync, never blocks);
`Forwarder.run`, owned by the runtime's TaskGroup, batches them into PackedForward messages
``[tag, <bin: msgpack [EventTime, record] entries>, {"chunk": id, "size": n}]``, one tag
(``runink.<herd>.<slice>``) per message, and waits for the collector's ``{"ack": id}`` before
sending the next. A chunk keeps its id and bytes until acknowledged, so after a reconnect it is
sent again unchanged and a collector can drop the duplicate. The buffer is bounded: when the
collector stays away, the oldest unsent lines are dropped and counted (`Forwarder.dropped`).
msgpack is hand-encoded (the subset the protocol needs): one small module instead of a dependency.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import itertools
import logging
import os
import struct
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("runink.agent.fluent")


# -- msgpack subset ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EventTime:
    """Fluentd's EventTime: msgpack ext type 0, seconds and nanoseconds as big-endian uint32."""

    seconds: int
    nanoseconds: int = 0

    @classmethod
    def of(cls, t: float) -> EventTime:
        sec = int(t // 1)
        # Rounded from the fraction alone: t * 1e9 would lose the nanoseconds to float precision.
        return cls(sec, min(999_999_999, round((t - sec) * 1e9)))


def packb(obj: Any) -> bytes:
    """msgpack encoding of None, bool, int, float, str, bytes, list/tuple, dict, EventTime."""
    out = bytearray()
    _pack(obj, out)
    return bytes(out)


def _pack(obj: Any, out: bytearray) -> None:
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        if 0 <= obj < 0x80:
            out.append(obj)
        elif -32 <= obj < 0:
            out.append(obj & 0xFF)
        elif 0 <= obj < 1 << 64:
            out += b"\xcf" + struct.pack(">Q", obj)
        elif -(1 << 63) <= obj < 0:
            out += b"\xd3" + struct.pack(">q", obj)
        else:
            raise OverflowError(f"integer {obj} does not fit in 64 bits")
    elif isinstance(obj, float):
        out += b"\xcb" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        _header(len(raw := obj.encode()), out, fix=(0xA0, 32), b8=0xD9, b16=0xDA, b32=0xDB)
        out += raw
    elif isinstance(obj, bytes | bytearray | memoryview):
        _header(len(obj), out, fix=None, b8=0xC4, b16=0xC5, b32=0xC6)
        out += obj
    elif isinstance(obj, EventTime):
        out += b"\xd7\x00" + struct.pack(">II", obj.seconds, obj.nanoseconds)
    elif isinstance(obj, list | tuple):
        _header(len(obj), out, fix=(0x90, 16), b8=None, b16=0xDC, b32=0xDD)
        for x in obj:
            _pack(x, out)
    elif isinstance(obj, dict):
        _header(len(obj), out, fix=(0x80, 16), b8=None, b16=0xDE, b32=0xDF)
        for k, v in obj.items():
            _pack(k, out)
            _pack(v, out)
    else:
        raise TypeError(f"cannot msgpack {type(obj).__name__}")


def _header(
    n: int, out: bytearray, *, fix: tuple[int, int] | None, b8: int | None, b16: int, b32: int
) -> None:
    if fix is not None and n < fix[1]:
        out.append(fix[0] | n)
    elif b8 is not None and n < 1 << 8:
        out += bytes((b8, n))
    elif n < 1 << 16:
        out += bytes((b16,)) + struct.pack(">H", n)
    else:
        out += bytes((b32,)) + struct.pack(">I", n)


class Incomplete(ValueError):
    """The buffer ends inside a msgpack object: read more bytes and try again."""


_FIXED = {  # type byte -> (struct format, size) for scalars
    0xCA: (">f", 4), 0xCB: (">d", 8),
    0xCC: (">B", 1), 0xCD: (">H", 2), 0xCE: (">I", 4), 0xCF: (">Q", 8),
    0xD0: (">b", 1), 0xD1: (">h", 2), 0xD2: (">i", 4), 0xD3: (">q", 8),
}  # fmt: skip


def unpack(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """Decode one object at *pos*; returns it and the position after it. Raises `Incomplete`
    when *buf* ends too early and ValueError on bytes that are not msgpack this module knows."""

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(buf):
            raise Incomplete
        b = buf[pos : pos + n]
        pos += n
        return b

    def length(size: int) -> int:
        return int.from_bytes(take(size), "big")

    t = take(1)[0]
    if t < 0x80:
        return t, pos
    if t >= 0xE0:
        return t - 0x100, pos
    if 0xA0 <= t <= 0xBF or t in (0xD9, 0xDA, 0xDB):
        n = t & 0x1F if t <= 0xBF else length({0xD9: 1, 0xDA: 2, 0xDB: 4}[t])
        return take(n).decode(), pos
    if t in (0xC4, 0xC5, 0xC6):
        return take(length({0xC4: 1, 0xC5: 2, 0xC6: 4}[t])), pos
    if 0x90 <= t <= 0x9F or t in (0xDC, 0xDD):
        n = t & 0x0F if t <= 0x9F else length(2 if t == 0xDC else 4)
        items = []
        for _ in range(n):
            x, pos = unpack(buf, pos)
            items.append(x)
        return items, pos
    if 0x80 <= t <= 0x8F or t in (0xDE, 0xDF):
        n = t & 0x0F if t <= 0x8F else length(2 if t == 0xDE else 4)
        d = {}
        for _ in range(n):
            k, pos = unpack(buf, pos)
            d[k], pos = unpack(buf, pos)
        return d, pos
    if t in (0xC0, 0xC2, 0xC3):
        return {0xC0: None, 0xC2: False, 0xC3: True}[t], pos
    if t in _FIXED:
        fmt, size = _FIXED[t]
        return struct.unpack(fmt, take(size))[0], pos
    if t == 0xD7:
        ext = take(9)
        if ext[0] != 0:
            raise ValueError(f"unknown msgpack ext type {ext[0]}")
        sec, nsec = struct.unpack(">II", ext[1:])
        return EventTime(sec, nsec), pos
    raise ValueError(f"unsupported msgpack type byte 0x{t:02x}")


# -- the forwarder -----------------------------------------------------------------------------
def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); ValueError names what is wrong."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"fluentd address {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class _Chunk:
    id: str
    tag: str
    entries: bytes
    count: int

    def message(self) -> bytes:
        return packb([self.tag, self.entries, {"chunk": self.id, "size": self.count}])


class Forwarder:
    """Batches slice log lines to one Forward-protocol collector at *host*:*port*.

    ``emit`` from the event loop's thread (the log pumps); ``await run()`` in a TaskGroup until
    cancelled. At most *max_records* lines wait in memory (queued plus the chunk in flight);
    beyond that the oldest queued line is dropped and counted in `dropped`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        node: str,
        tag_prefix: str = "runink",
        batch_records: int = 500,
        max_records: int = 100_000,
        flush_interval: float = 0.2,
        ack_timeout: float = 10.0,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
    ) -> None:
        if max_records < batch_records:
            raise ValueError("max_records must be at least batch_records")
        self.host, self.port, self.node = host, port, node
        self.tag_prefix = tag_prefix
        self.batch_records = batch_records
        self.max_records = max_records
        self.flush_interval = flush_interval
        self.ack_timeout = ack_timeout
        self.reconnect_min, self.reconnect_max = reconnect_min, reconnect_max
        self.dropped = 0
        """Lines dropped because the buffer was full (the collector was away too long)."""
        self.sent_chunks = 0
        """Chunks the collector acknowledged."""
        self.reconnects = 0
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._inflight: _Chunk | None = None
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._ids = itertools.count()
        self._id_prefix = os.urandom(8)

    # -- producer side -----------------------------------------------------------------------
    def emit(self, herd: str, slice: str, stream: str, line: bytes, t: float | None = None) -> None:
        """Queue one log line (without its newline). Never blocks; drops the oldest when full."""
        t = time.time() if t is None else t
        record = {
            "log": line.decode(errors="replace"),
            "stream": stream,
            "slice": slice,
            "herd": herd,
            "node": self.node,
            "time": _rfc3339(t),
        }
        inflight = self._inflight.count if self._inflight is not None else 0
        while self._queue and len(self._queue) + inflight >= self.max_records:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((f"{self.tag_prefix}.{herd}.{slice}", packb([EventTime.of(t), record])))
        if len(self._queue) >= self.batch_records:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Lines not yet acknowledged (queued plus in flight)."""
        return len(self._queue) + (self._inflight.count if self._inflight is not None else 0)

    def _next_chunk(self) -> _Chunk | None:
        if self._inflight is None and self._queue:
            tag = self._queue[0][0]
            entries = bytearray()
            n = 0
            # One tag per message: take the head's run of lines with the same tag.
            while self._queue and n < self.batch_records and self._queue[0][0] == tag:
                entries += self._queue.popleft()[1]
                n += 1
            cid = base64.b64encode(self._id_prefix + next(self._ids).to_bytes(8, "big")).decode()
            self._inflight = _Chunk(cid, tag, bytes(entries), n)
        return self._inflight

    # -- sender side -------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, send chunks and wait for their acks; reconnect with backoff on any failure."""
        delay = self.reconnect_min
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as e:
                log.debug("fluentd %s:%d unreachable: %s", self.host, self.port, e)
                await asyncio.sleep(delay)
                delay = min(self.reconnect_max, delay * 2)
                continue
            delay = self.reconnect_min
            try:
                await self._session(reader, writer)
            except (OSError, EOFError, TimeoutError, ValueError) as e:
                # ValueError: the collector answered something that is not msgpack.
                log.debug("fluentd %s:%d connection lost: %s", self.host, self.port, e)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(self.reconnect_max, delay * 2)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        while True:
            chunk = self._next_chunk()
            if chunk is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval):
                        await self._wake.wait()
                continue
            writer.write(chunk.message())
            await writer.drain()
            async with asyncio.timeout(self.ack_timeout):
                while True:
                    try:
                        reply, end = unpack(buf)
                    except Incomplete:
                        data = await reader.read(4096)
                        if not data:
                            raise EOFError("the collector closed the connection") from None
                        buf += data
                        continue
                    buf = buf[end:]
                    if isinstance(reply, dict) and reply.get("ack") == chunk.id:
                        break
            self._inflight = None
            self.sent_chunks += 1
            self._acked.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued line is acknowledged, at most *timeout* s (needs `run`)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.pending:
                    self._acked.clear()
                    self._wake.set()
                    await self._acked.wait()
        return not self.pending
