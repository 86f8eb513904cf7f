"""`runink up --replicas 3`, then kill the leader: `runink get` and `runink apply` keep working after
failover with nothing lost, and `runink cluster status` names the new leader."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

HERD = """apiVersion: runink.io/v1
kind: Herd
metadata:
  name: {name}
spec: {{}}
"""


def _free_base() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base > 60000:
            continue
        free = True
        for off in (10, 20):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + off))
                except OSError:
                    free = False
        if free:
            return base
    raise RuntimeError("no free port range")


def _cli(root: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runink.cli", "--config", str(root / "config"), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )


def _leader(root: Path, replica: int) -> str | None:
    r = _cli(root, "cluster", "status", "--data-dir", str(root / "data" / f"r{replica}"))
    m = re.search(r"^leader: (\S+)", r.stdout, flags=re.M)
    return m.group(1) if m and m.group(1) != "None" else None


def test_up_replicas_survives_killing_the_leader() -> None:
    root = Path(tempfile.mkdtemp(prefix="runink-replicas-", dir="/var/tmp"))
    base = _free_base()
    log = (root / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "runink.cli", "--config", str(root / "config"), "up",
         "--replicas", "3", "--data-dir", str(root / "data"), "--port", str(base)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 120
        while not (root / "config").exists():
            assert up.poll() is None, (root / "up.log").read_text()
            assert time.monotonic() < deadline, "the replicas did not start"
            time.sleep(0.5)
        for i in range(5):
            (root / f"h{i}.yaml").write_text(HERD.format(name=f"before-{i}"))
            r = _cli(root, "apply", "-f", str(root / f"h{i}.yaml"))
            assert r.returncode == 0, r.stderr
        leader = None
        while leader is None and time.monotonic() < deadline:
            leader = _leader(root, 0)
        assert leader is not None
        # Kill the leader's process: its Raft address is on its command line.
        victim = subprocess.run(
            ["pgrep", "-f", "--", f"--raft-addr {leader}"], capture_output=True, text=True
        ).stdout.split()
        assert victim, f"no process for leader {leader}"
        cmdline = Path(f"/proc/{victim[0]}/cmdline").read_bytes().split(b"\0")
        victim_dir = cmdline[cmdline.index(b"--data-dir") + 1].decode()
        os.kill(int(victim[0]), signal.SIGKILL)
        killed_at = time.monotonic()

        (root / "after.yaml").write_text(HERD.format(name="after-failover"))
        while True:
            r = _cli(root, "apply", "-f", str(root / "after.yaml"), timeout=30)
            if r.returncode == 0:
                break
            assert time.monotonic() - killed_at < 30, (
                f"no write accepted after failover: {r.stderr}"
            )
            time.sleep(0.2)
        r = _cli(root, "get", "herds", "-o", "name")
        assert r.returncode == 0, r.stderr
        names = set(r.stdout.split())
        assert {f"herd/before-{i}" for i in range(5)} <= names, "nothing acknowledged is lost"
        assert "herd/after-failover" in names

        survivors = [i for i in range(3) if not victim_dir.endswith(f"/r{i}")]
        assert len(survivors) == 2
        new_leader = None
        for i in survivors:
            new_leader = new_leader or _leader(root, i)
        assert new_leader is not None
        assert new_leader != leader, "cluster status names the new leader"
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
