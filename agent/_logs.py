"""Per-slice log files: fed from the slice's stdout/stderr FIFOs, size-capped and rotated, and read
back with tail and follow (what the API serves for ``runink logs -f``).

Lines are stored in the Kubernetes CRI log format, ``<RFC 3339 time> <stream> <F|P> <text>`` (P marks
a partial line cut at `MAX_LINE`), so one file interleaves both streams in arrival order.
``current.log`` rotates to ``current.log.1`` .. ``.N`` at ``max_bytes``; a ``done`` marker tells
followers that no more lines will come. The agent's runtime (agent/_runtime.py) owns the pumps;
`SliceLogSource` is what the API server mounts (its ``LogSource``) to serve ``runink logs [-f]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

from runink.schemas import errors

CURRENT = "current.log"
DONE = "done"
MAX_LINE = 16 * 1024


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LogWriter:
    """Appends lines to ``<dir>/current.log``, rotating at *max_bytes* and keeping *keep* files.

    *sink* (``sink(stream, text)``) also gets every line, e.g. the Fluentd forwarder's emit.
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 10 << 20,
        keep: int = 3,
        sink: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.dir = directory
        self.sink = sink
        self.max_bytes = max_bytes
        self.keep = keep
        directory.mkdir(parents=True, exist_ok=True)
        (directory / DONE).unlink(missing_ok=True)
        self._f = open(directory / CURRENT, "ab")  # noqa: SIM115 - lives as long as the writer
        self._size = self._f.tell()

    def write_line(self, stream: str, text: bytes, partial: bool = False) -> None:
        rec = f"{_now()} {stream} {'P' if partial else 'F'} ".encode() + text + b"\n"
        if self._size + len(rec) > self.max_bytes and self._size > 0:
            self._rotate()
        self._f.write(rec)
        self._f.flush()
        self._size += len(rec)
        if self.sink is not None:
            self.sink(stream, text)

    def _rotate(self) -> None:
        self._f.close()
        for i in range(self.keep - 1, 0, -1):
            src = self.dir / f"{CURRENT}.{i}"
            if src.exists():
                os.replace(src, self.dir / f"{CURRENT}.{i + 1}")
        os.replace(self.dir / CURRENT, self.dir / f"{CURRENT}.1")
        (self.dir / f"{CURRENT}.{self.keep + 1}").unlink(missing_ok=True)
        self._f = open(self.dir / CURRENT, "ab")  # noqa: SIM115
        self._size = 0

    def close(self, done: bool = True) -> None:
        self._f.close()
        if done:
            (self.dir / DONE).touch()


async def pump(fd: int, stream: str, writer: LogWriter) -> None:
    """Copy lines from the non-blocking read end *fd* into *writer* until every writer closed.

    It never stops draining: a full pipe (64 KiB) would block the step. Closes *fd*.
    """
    loop = asyncio.get_running_loop()
    buf = b""
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    try:
        while True:
            await readable.wait()
            readable.clear()
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                while len(line) > MAX_LINE:
                    writer.write_line(stream, line[:MAX_LINE], partial=True)
                    line = line[MAX_LINE:]
                writer.write_line(stream, line)
            while len(buf) > MAX_LINE:
                writer.write_line(stream, buf[:MAX_LINE], partial=True)
                buf = buf[MAX_LINE:]
        if buf:
            writer.write_line(stream, buf)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _files_oldest_first(directory: Path) -> list[Path]:
    rotated = sorted(
        (p for p in directory.glob(f"{CURRENT}.*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    cur = directory / CURRENT
    return [*rotated, cur] if cur.exists() else rotated


def tail(directory: Path, n: int | None = None) -> list[str]:
    """The last *n* lines (all when ``None``), oldest first, across rotated files."""
    lines: list[str] = []
    for p in _files_oldest_first(directory):
        lines.extend(p.read_text(errors="replace").splitlines())
    return lines if n is None else lines[-n:] if n > 0 else []


async def follow(
    directory: Path, tail_lines: int | None = 10, poll: float = 0.05
) -> AsyncIterator[str]:
    """Yield the last *tail_lines* lines, then new ones as they come, until the slice is done.

    Polls (inotify would need another dependency); follows rotation by watching the inode.
    """
    for line in tail(directory, tail_lines):
        yield line
    cur = directory / CURRENT
    f = None
    ino = -1
    with contextlib.ExitStack() as stack:
        while True:
            if f is None and cur.exists():
                f = stack.enter_context(open(cur, "rb"))  # noqa: ASYNC230 - local file, tiny reads
                st = os.fstat(f.fileno())
                ino = st.st_ino
                f.seek(st.st_size)
            done = (directory / DONE).exists()
            if f is not None:
                chunk = f.readline()
                while chunk.endswith(b"\n"):
                    yield chunk[:-1].decode(errors="replace")
                    chunk = f.readline()
                if chunk:
                    f.seek(-len(chunk), os.SEEK_CUR)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(cur).st_ino != ino:
                        # Rotated: finish the old file (done above), then start the new one from 0.
                        f.close()
                        f = stack.enter_context(open(cur, "rb"))  # noqa: ASYNC230
                        ino = os.fstat(f.fileno()).st_ino
                        continue
            if done:
                return
            await asyncio.sleep(poll)


def _text(line: str) -> bytes:
    """A stored CRI line back to what the step wrote (a ``P`` line gets no newline)."""
    parts = line.split(" ", 3)
    if len(parts) < 3 or parts[2] not in ("F", "P"):
        return (line + "\n").encode()
    text = parts[3] if len(parts) == 4 else ""
    return text.encode() + (b"\n" if parts[2] == "F" else b"")


class SliceLogSource:
    """The API server's ``LogSource`` over this node's slice logs.

    *find* maps (herd, slice name) to the log directory, or None when the slice never ran here
    (pass ``lambda h, n: rt.log_dir(sid) if (sid := rt.find(h, n)) else None``; `for_runtime`
    does). Yields the step's output as written (both streams, in arrival order); with *follow*
    it keeps going until the slice ends.
    """

    def __init__(self, find: Callable[[str, str], Path | None], poll: float = 0.05) -> None:
        self._find = find
        self.poll = poll

    @classmethod
    def for_runtime(cls, runtime: _HasLogs) -> SliceLogSource:
        def find(herd: str, name: str) -> Path | None:
            sid = runtime.find(herd, name)
            return runtime.log_dir(sid) if sid is not None else None

        return cls(find)

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike[str]) -> SliceLogSource:
        """Logs found from the agent's state dir alone (no runtime object needed): the newest
        ``<herd>.<slice>.<uid8>/logs`` there. For `runink up`, where `run_agent` owns the runtime."""
        root = Path(state_dir)

        def find(herd: str, name: str) -> Path | None:
            prefix = f"{herd}.{name}."
            dirs = [
                d
                for d in (root.iterdir() if root.exists() else [])
                if d.name.startswith(prefix) and len(d.name) == len(prefix) + 8
            ]
            if not dirs:
                return None
            return max(dirs, key=lambda d: d.stat().st_mtime) / "logs"

        return cls(find)

    async def read(
        self, herd: str, slice: str, *, follow: bool, tail: int | None
    ) -> AsyncIterator[bytes]:
        directory = self._find(herd, slice)
        if directory is None or not directory.exists():
            raise errors.NotFound(f"no logs for slice {herd}/{slice} on this node")
        if follow:
            async for line in _follow(directory, tail, self.poll):
                yield _text(line)
        else:
            for line in _tail(directory, tail):
                yield _text(line)


# read()'s keyword names (the API's LogSource Protocol) shadow these two functions.
_follow, _tail = follow, tail


class _HasLogs(Protocol):
    """What `SliceLogSource.for_runtime` needs (satisfied by `SliceRuntime`)."""

    def find(self, herd: str, name: str) -> str | None: ...

    def log_dir(self, spec_id: str) -> Path: ...
