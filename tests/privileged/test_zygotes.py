"""Pre-cloned slice inits (zygotes): a launch uses one and keeps every isolation property; parked
zygotes never outlive their fork server (clean close, or the server SIGKILLed)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from runink.agent import _launcher

pytestmark = pytest.mark.privileged


def children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out.update(int(c) for c in (task / "children").read_text().split())
    return out


def wait_children(pid: int, n: int) -> set[int]:
    deadline = time.monotonic() + 10
    while len(kids := children(pid)) < n:
        assert time.monotonic() < deadline, f"{len(kids)} zygotes after 10 s"
        time.sleep(0.01)
    return kids


def gone(pids: set[int]) -> bool:
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_launch_uses_a_zygote_and_stays_isolated(shared_dir: Path) -> None:
    lau = _launcher.Launcher.start()
    try:
        lau.enable_zygotes(2, ("none",))
        parked = wait_children(lau.pid, 2)
        outs = []
        for i, uid in enumerate((251_001, 251_002)):
            o = shared_dir / f"out{i}"
            os.mkfifo(o, 0o600)
            rfd = os.open(o, os.O_RDONLY | os.O_NONBLOCK)
            req = _launcher.LaunchRequest(
                argv=("/bin/sh", "-c", "echo $$ $(hostname) $(id -u) $(cat /proc/self/uid_map); ls -A /tmp; touch /tmp/x"),
                env={"PATH": "/usr/bin:/bin"}, hostname=f"zyg{i}", uid=uid, gid=uid,
                network="none", stdout=str(o),
            )  # fmt: skip
            pid = lau.launch_sync(req)
            assert pid in parked  # no clone on the launch path
            assert lau.wait_sync(pid) == 0
            os.set_blocking(rfd, True)
            outs.append(os.read(rfd, 4096).decode().split())
            os.close(rfd)
        # PID 2 under its own PID 1, its own hostname, root of its user ns mapped to its own
        # host uid, an empty own /tmp (the first slice's /tmp/x is not in the second's).
        assert outs == [
            ["2", "zyg0", "0", "0", "251001", "1"],
            ["2", "zyg1", "0", "0", "251002", "1"],
        ]
        assert not Path("/tmp/x").exists() or Path("/tmp/x").stat().st_mtime < time.time() - 60
    finally:
        lau.close()


def test_parked_zygotes_go_with_the_server() -> None:
    lau = _launcher.Launcher.start()
    try:
        lau.enable_zygotes(2, ("none", "host"))
        parked = wait_children(lau.pid, 4)
    finally:
        lau.close()  # EOF: the server kills and reaps them
    assert gone(parked)

    lau = _launcher.Launcher.start()
    try:
        lau.enable_zygotes(2, ("none",))
        parked = wait_children(lau.pid, 2)
        os.kill(lau.pid, signal.SIGKILL)  # no chance to clean up: PDEATHSIG does
        assert gone(parked), "zygotes outlived a SIGKILLed fork server"
    finally:
        lau.close()


@pytest.mark.parametrize("zygotes", [True, False], ids=["zygote", "clone"])
def test_step_end_is_reported_once_before_the_init_exits(zygotes: bool) -> None:
    """The init reports its step's status before its own exit (which tears down the namespaces);
    the server then reaps the init without a second report, which a later slice reusing the
    pid would otherwise receive as its own exit."""
    lau = _launcher.Launcher.start()
    try:
        if zygotes:
            lau.enable_zygotes(2, ("none",))
            parked = wait_children(lau.pid, 2)
        cases = {"exit 7": 7 << 8, "kill -KILL $$": (128 + 9) << 8, "true": 0}
        for i, (script, status) in enumerate(cases.items()):
            req = _launcher.LaunchRequest(
                argv=("/bin/sh", "-c", script), env={"PATH": "/usr/bin:/bin"},
                hostname="rep", uid=252_000 + i, gid=252_000 + i, network="none",
            )  # fmt: skip
            pid = lau.launch_sync(req)
            if zygotes and i == 0:
                assert pid in parked
            assert lau.wait_sync(pid) == status, script
            assert gone({pid}), "the server did not reap the init"
        # A round trip after the reaps: any second report would have arrived by now.
        lau.wait_sync(lau.launch_sync(req))
        assert lau._exits == {}
    finally:
        lau.close()


def private_dirty_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    raise AssertionError("no Private_Dirty line")


def test_running_slice_inits_stay_small() -> None:
    """Zygotes copy ahead only the pages a released init was seen to write, not the fork
    server's whole ~8 MiB image: a node running many slices pays ~1-2 MiB per slice init."""
    lau = _launcher.Launcher.start()
    pids: list[int] = []
    try:
        lau.enable_zygotes(2, ("none",))
        wait_children(lau.pid, 2)
        for i in range(8):  # past the releases the server learns from, and some refills
            req = _launcher.LaunchRequest(
                argv=("/bin/sleep", "30") if i >= 6 else ("/bin/true",), env={},
                hostname="mem", uid=253_000 + i, gid=253_000 + i, network="none",
            )  # fmt: skip
            pid = lau.launch_sync(req)
            if i < 6:
                assert lau.wait_sync(pid) == 0
                wait_children(lau.pid, 2)  # refilled
            else:
                pids.append(pid)
        for pid in pids:
            assert private_dirty_kib(pid) < 4096
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            lau.wait_sync(pid)
        lau.close()
