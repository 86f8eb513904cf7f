"""Helpers for tests that drive `runink up --replicas N` as a user would (subprocesses)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_base() -> int:
    """A port P such that every port a replica i listens on is free: P+10i plus its controller
    (+1), token (+2) and lineage (+3) ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base > 60000:
            continue
        free = True
        for off in (o + i for i in (0, 10, 20) for o in range(4) if o + i):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + off))
                except OSError:
                    free = False
        if free:
            return base
    raise RuntimeError("no free port range")


def cli(root: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runink.cli", "--config", str(root / "config"), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )


def leader(root: Path, replica: int) -> str | None:
    r = cli(root, "cluster", "status", "--data-dir", str(root / "data" / f"r{replica}"))
    m = re.search(r"^leader: (\S+)", r.stdout, flags=re.M)
    return m.group(1) if m and m.group(1) != "None" else None


def _logs(root: Path) -> str:
    """runink up's output and every replica's log, for a failure message."""
    parts = [(root / "up.log").read_text(errors="replace")]
    parts += [
        f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:]
        for log in sorted((root / "data").glob("r*.log"))
    ]
    return "\n".join(parts)


@contextlib.contextmanager
def replicas(n: int = 3) -> Iterator[Path]:
    """`runink up --replicas n` in a fresh dir under /var/tmp; everything removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="runink-replicas-", dir="/var/tmp"))
    log = (root / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "runink.cli", "--config", str(root / "config"), "up",
         "--replicas", str(n), "--data-dir", str(root / "data"), "--port", str(free_base())],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    leftovers: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not (root / "config").exists():
            assert up.poll() is None, _logs(root)
            assert time.monotonic() < deadline, "the replicas did not start"
            time.sleep(0.5)
        while leader(root, 0) is None:
            assert time.monotonic() < deadline, "no leader elected"
            time.sleep(0.5)
        yield root
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        leftovers = subprocess.run(
            ["pgrep", "-f", f"runink.cli._cluster server --data-dir {root}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        for pid in leftovers:
            os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, "up --replicas left replica processes behind"
