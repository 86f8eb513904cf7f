"""Per-slice log files: CRI line format, size cap with rotation, tail and follow."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runink.agent import _logs
from runink.schemas import errors


def texts(lines: list[str]) -> list[str]:
    return [ln.split(" ", 3)[3] for ln in lines]


def test_rotation_caps_size_and_tail_spans_files(tmp_path: Path) -> None:
    w = _logs.LogWriter(tmp_path, max_bytes=400, keep=2)
    for i in range(40):
        w.write_line("stdout", f"line {i:03d}".encode())
    w.close()
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("current"))
    assert files == ["current.log", "current.log.1", "current.log.2"]
    assert all(p.stat().st_size <= 400 for p in tmp_path.glob("current.log*"))
    got = texts(_logs.tail(tmp_path))
    assert got[-1] == "line 039"
    assert got == sorted(got)  # oldest first across rotated files
    assert texts(_logs.tail(tmp_path, 3)) == ["line 037", "line 038", "line 039"]


async def test_pump_splits_lines_and_marks_partial(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    writer = _logs.LogWriter(tmp_path)
    os.write(w, b"hello\nwor")
    os.write(w, b"ld\n" + b"x" * (_logs.MAX_LINE + 5) + b"\nlast-no-newline")
    os.close(w)
    await _logs.pump(r, "stderr", writer)
    writer.close()
    lines = _logs.tail(tmp_path)
    assert texts(lines)[:2] == ["hello", "world"]
    assert " stderr P " in lines[2] and " stderr F " in lines[3]
    assert texts(lines)[-1] == "last-no-newline"


async def test_follow_streams_until_done(tmp_path: Path) -> None:
    writer = _logs.LogWriter(tmp_path, max_bytes=200, keep=3)
    writer.write_line("stdout", b"before")
    seen: list[str] = []

    async def consume() -> None:
        async for line in _logs.follow(tmp_path, tail_lines=1, poll=0.01):
            seen.append(line.split(" ", 3)[3])  # noqa: PERF401 - appended live, read meanwhile

    async with asyncio.TaskGroup() as tg:
        tg.create_task(consume())
        while not seen:
            await asyncio.sleep(0.01)
        for i in range(10):  # enough to rotate several times while following
            writer.write_line("stdout", f"after {i} {'.' * 40}".encode())
            await asyncio.sleep(0.02)
        writer.close()
    assert seen[0] == "before"
    assert [s.split()[1] for s in seen[1:]] == [str(i) for i in range(10)]


async def test_log_source_serves_the_newest_slice_of_that_name(tmp_path: Path) -> None:
    old, new = tmp_path / "team.etl.aaaaaaaa", tmp_path / "team.etl.bbbbbbbb"
    for d, text in ((old, b"old"), (new, b"new")):
        w = _logs.LogWriter(d / "logs")
        w.write_line("stdout", text)
        w.write_line("stderr", b"half", partial=True)
        w.close()
    os.utime(old, (1, 1))
    src = _logs.SliceLogSource.for_state_dir(tmp_path)
    got = b"".join([c async for c in src.read("team", "etl", follow=True, tail=None)])
    assert got == b"new\nhalf"
    with pytest.raises(errors.NotFound):
        async for _ in src.read("team", "etl-2", follow=False, tail=None):
            pass
