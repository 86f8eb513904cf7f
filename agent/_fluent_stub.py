"""A tiny Fluentd forward-protocol collector on loopback, for tests of agent/_fluent.py.

It decodes Message, Forward and PackedForward messages with `_fluent.unpack`, keeps every record
it accepted per chunk id, and acknowledges chunks, unless told to misbehave: ``drop_next(n)``
closes the connection on the next *n* chunks without acking (the sender must resend the same
chunk), ``refuse`` stops listening altogether. Shipped beside the code as a test double, like
the store's memory backend; nothing in the agent imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from runink.agent import _fluent


@dataclass(slots=True)
class Received:
    """Every record the stub accepted, grouped by chunk id (a resent chunk is counted once)."""

    chunks: dict[str, list[tuple[str, Any, dict[str, Any]]]] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)
    """chunk id -> how many times it arrived (more than once after a lost ack)."""
    unchunked: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    changed_chunks: list[str] = field(default_factory=list)
    """Chunk ids that arrived again with different records (a sender bug)."""

    def records(self) -> list[tuple[str, Any, dict[str, Any]]]:
        return [r for recs in self.chunks.values() for r in recs] + self.unchunked


class ForwardStub:
    """``async with ForwardStub() as stub``: listens on 127.0.0.1:*port* (0: any free port)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.received = Received()
        self.connections = 0
        self._drop = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.changed = asyncio.Condition()

    def drop_next(self, n: int) -> None:
        """Close the connection instead of acking the next *n* chunks."""
        self._drop = n

    async def __aenter__(self) -> ForwardStub:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, records: int, timeout: float = 10.0) -> None:
        """Until at least *records* distinct records arrived."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.received.records()) >= records)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        buf = b""
        try:
            while True:
                try:
                    msg, end = _fluent.unpack(buf)
                except _fluent.Incomplete:
                    data = await reader.read(65536)
                    if not data:
                        return
                    buf += data
                    continue
                buf = buf[end:]
                if not await self._handle(msg, writer):
                    return
        except (ConnectionError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handle(self, msg: list[Any], writer: asyncio.StreamWriter) -> bool:
        tag, body = msg[0], msg[1]
        option = msg[2] if len(msg) > 2 and isinstance(msg[2], dict) else {}
        if len(msg) >= 3 and not isinstance(body, list | bytes):
            entries = [(body, msg[2])]  # Message mode: [tag, time, record, option?]
            option = msg[3] if len(msg) > 3 else {}
        elif isinstance(body, bytes):
            entries, pos = [], 0  # PackedForward: concatenated [time, record]
            while pos < len(body):
                entry, pos = _fluent.unpack(body, pos)
                entries.append((entry[0], entry[1]))
        else:
            entries = [(e[0], e[1]) for e in body]  # Forward
        chunk = option.get("chunk")
        if chunk is not None and self._drop > 0:
            self._drop -= 1
            self.received.deliveries[chunk] = self.received.deliveries.get(chunk, 0) + 1
            return False
        recs = [(str(tag), t, rec) for t, rec in entries]
        async with self.changed:
            if chunk is None:
                self.received.unchunked.extend(recs)
            else:
                self.received.deliveries[chunk] = self.received.deliveries.get(chunk, 0) + 1
                old = self.received.chunks.get(chunk)
                if old is not None and old != recs:
                    # A resend after a lost ack must carry the same records under the same id.
                    self.received.changed_chunks.append(chunk)
                self.received.chunks[chunk] = recs
            self.changed.notify_all()
        if chunk is not None:
            writer.write(_fluent.packb({"ack": chunk}))
            await writer.drain()
        return True
