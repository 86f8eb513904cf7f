"""Fluentd forward output: msgpack bytes, batching, acks, redelivery and bounded buffering,
against the loopback collector stub (agent/_fluent_stub.py)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from runink.agent import _fluent, _fluent_stub


# Byte vectors from the msgpack specification, so encoder and decoder are not only checked
# against each other.
@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, b"\xc0"),
        (True, b"\xc3"),
        (5, b"\x05"),
        (-1, b"\xff"),
        (300, b"\xcf" + struct.pack(">Q", 300)),
        (-300, b"\xd3" + struct.pack(">q", -300)),
        (1.5, b"\xcb" + struct.pack(">d", 1.5)),
        ("ab", b"\xa2ab"),
        ("x" * 40, b"\xd9\x28" + b"x" * 40),
        (b"\x00\x01", b"\xc4\x02\x00\x01"),
        ([1, "a"], b"\x92\x01\xa1a"),
        ({"ack": "id"}, b"\x81\xa3ack\xa2id"),
        (_fluent.EventTime(1, 2), b"\xd7\x00\x00\x00\x00\x01\x00\x00\x00\x02"),
        (list(range(20)), b"\xdc\x00\x14" + bytes(range(20))),
    ],
)
def test_msgpack_matches_the_specification(value: object, encoded: bytes) -> None:
    assert _fluent.packb(value) == encoded
    assert _fluent.unpack(encoded) == (value, len(encoded))


def test_a_truncated_message_asks_for_more_bytes() -> None:
    data = _fluent.packb({"ack": "abcdef", "n": [1, 2, 3]})
    for cut in range(len(data)):
        with pytest.raises(_fluent.Incomplete):
            _fluent.unpack(data[:cut])


@pytest.mark.parametrize("bad", ["host", ":24224", "h:0", "h:99999", "h:port"])
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        _fluent.parse_address(bad)


@pytest.fixture
async def stub() -> AsyncIterator[_fluent_stub.ForwardStub]:
    async with _fluent_stub.ForwardStub() as s:
        yield s


async def _running(fwd: _fluent.Forwarder) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(fwd.run())
        try:
            yield
        finally:
            task.cancel()


async def test_lines_arrive_tagged_with_herd_and_slice_in_one_acknowledged_chunk(
    stub: _fluent_stub.ForwardStub,
) -> None:
    fwd = _fluent.Forwarder("127.0.0.1", stub.port, node="n1")
    for i in range(50):
        fwd.emit("finance", "load-1", "stdout", f"line {i}".encode(), t=1700000000.25)
    fwd.emit("finance", "other", "stderr", b"oops \xff")
    async for _ in _running(fwd):
        await stub.wait_for(51)
        assert await fwd.flush(5.0)
    got = stub.received
    assert len(got.chunks) == 2  # one PackedForward message per tag run
    first = next(iter(got.chunks.values()))
    assert [r["log"] for _, _, r in first] == [f"line {i}" for i in range(50)]
    tag, t, rec = first[0]
    assert tag == "runink.finance.load-1"
    assert t == _fluent.EventTime(1700000000, 250_000_000)
    assert rec == {
        "log": "line 0",
        "stream": "stdout",
        "slice": "load-1",
        "herd": "finance",
        "node": "n1",
        "time": "2023-11-14T22:13:20.250000Z",
    }
    tag, _, rec = got.records()[-1]
    assert (tag, rec["stream"], rec["log"]) == ("runink.finance.other", "stderr", "oops \ufffd")
    assert fwd.pending == 0 and fwd.dropped == 0


async def test_unacknowledged_chunks_are_resent_after_reconnects_without_loss(
    stub: _fluent_stub.ForwardStub,
) -> None:
    stub.drop_next(3)  # the collector hangs up on three chunks before acking them
    fwd = _fluent.Forwarder("127.0.0.1", stub.port, node="n1", batch_records=10, reconnect_min=0.01)
    async for _ in _running(fwd):
        for i in range(100):
            fwd.emit("h", "s", "stdout", str(i).encode())
            if i % 7 == 0:
                await asyncio.sleep(0)  # let chunks form while lines still come in
        await stub.wait_for(100)
        assert await fwd.flush(5.0)
    got = stub.received
    logs = [int(r["log"]) for _, _, r in got.records()]
    assert sorted(logs) == list(range(100))  # nothing lost, nothing twice across chunk ids
    assert got.changed_chunks == []  # a resent chunk carries exactly what it carried before
    assert sum(n - 1 for n in got.deliveries.values()) == 3
    assert stub.connections == 4 and fwd.reconnects == 3


async def test_a_long_outage_keeps_the_newest_lines_and_counts_the_dropped() -> None:
    with socket.socket() as s:  # a port nobody listens on (until the stub takes it below)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fwd = _fluent.Forwarder(
        "127.0.0.1", port, node="n1", batch_records=100, max_records=600, reconnect_min=0.01,
        reconnect_max=0.05,
    )  # fmt: skip
    async for _ in _running(fwd):
        for i in range(1000):
            fwd.emit("h", "s", "stdout", str(i).encode())
        assert fwd.dropped == 400 and fwd.pending == 600
        async with _fluent_stub.ForwardStub(port) as stub:
            await stub.wait_for(600)
            assert await fwd.flush(5.0)
    logs = [int(r["log"]) for _, _, r in stub.received.records()]
    assert sorted(logs) == list(range(400, 1000))
