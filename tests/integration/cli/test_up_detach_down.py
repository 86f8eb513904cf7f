"""`runink up --detach` passes every option to the background cluster; `runink down` stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def runink(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runink.cli", *argv],
        env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_detached_up_keeps_its_options_and_down_stops_it(tmp_path: Path) -> None:
    env = {**os.environ, "RUNINK_CONFIG": str(tmp_path / "config")}
    data = tmp_path / "data"
    up = runink(
        "up", "--detach", "--data-dir", str(data), "--port", "0", "--no-agent",
        "--node-grace-period", "3", env=env,
    )  # fmt: skip
    pid = int((data / "lock").read_text().strip()) if (data / "lock").exists() else 0
    try:
        assert up.returncode == 0, up.stderr
        assert "is up in the background" in up.stdout
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"--no-agent" in argv and b"--node-grace-period" in argv
        nodes = runink("get", "nodes", env=env)
        assert nodes.returncode == 0 and "No resources found" in nodes.stdout + nodes.stderr
        me = runink("whoami", "-o", "json", env=env)
        assert me.returncode == 0, me.stderr
        assert "system:masters" in json.loads(me.stdout)["groups"]

        down = runink("down", "--data-dir", str(data), env=env)
        assert down.returncode == 0, down.stderr
        assert f"pid {pid}" in down.stdout and "stopped" in down.stdout
        deadline = time.monotonic() + 10
        while alive(pid):
            assert time.monotonic() < deadline, "runink up still running after down"
            time.sleep(0.05)
        again = runink("down", "--data-dir", str(data), env=env)
        assert again.returncode == 0 and "not running" in again.stdout
    finally:
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
