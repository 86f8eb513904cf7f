"""`runink up --replicas 3`, then kill the leader: `runink get` and `runink apply` keep working after
failover with nothing lost, and `runink cluster status` names the new leader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _up

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

HERD = """apiVersion: runink.io/v1
kind: Herd
metadata:
  name: {name}
spec: {{}}
"""


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
    except (FileNotFoundError, ProcessLookupError):
        return b""  # exited meanwhile


def test_up_replicas_survives_killing_the_leader() -> None:
    with _up.replicas(3) as root:
        # The cluster secret (Raft peer encryption) is in each replica's data dir, never on a
        # command line, which any local user can read.
        secret = (root / "data" / "cluster.secret").read_bytes().strip()
        showing = [p.name for p in Path("/proc").iterdir() if secret in _cmdline(p)]
        assert showing == [], f"the cluster secret is on the command line of pids {showing}"
        for i in range(5):
            (root / f"h{i}.yaml").write_text(HERD.format(name=f"before-{i}"))
            r = _up.cli(root, "apply", "-f", str(root / f"h{i}.yaml"))
            assert r.returncode == 0, r.stderr
        leader = _up.leader(root, 0)
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
            r = _up.cli(root, "apply", "-f", str(root / "after.yaml"), timeout=30)
            if r.returncode == 0:
                break
            assert time.monotonic() - killed_at < 30, (
                f"no write accepted after failover: {r.stderr}"
            )
            time.sleep(0.2)
        r = _up.cli(root, "get", "herds", "-o", "name")
        assert r.returncode == 0, r.stderr
        names = set(r.stdout.split())
        assert {f"herd/before-{i}" for i in range(5)} <= names, "nothing acknowledged is lost"
        assert "herd/after-failover" in names

        survivors = [i for i in range(3) if not victim_dir.endswith(f"/r{i}")]
        assert len(survivors) == 2
        new_leader = None
        for i in survivors:
            new_leader = new_leader or _up.leader(root, i)
        assert new_leader is not None
        assert new_leader != leader, "cluster status names the new leader"
