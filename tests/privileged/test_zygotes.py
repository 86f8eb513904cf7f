"""Pre-cloned slice inits (zygotes): a launch uses one and keeps every isolation property; parked
zygotes never outlive their fork server (clean close, or the server SIGKILLed)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

from runink.agent import _cgroups, _launcher, _runtime

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
            pid = lau.launch_sync(req).pid
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
            pid = lau.launch_sync(req).pid
            if zygotes and i == 0:
                assert pid in parked
            assert lau.wait_sync(pid) == status, script
            assert gone({pid}), "the server did not reap the init"
        # A round trip after the reaps: any second report would have arrived by now.
        lau.wait_sync(lau.launch_sync(req).pid)
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
            pid = lau.launch_sync(req).pid
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


def cgroup_paths(pid: int) -> dict[str, str]:
    """/proc/PID/cgroup as {hierarchy: path} ("" for the cgroup2 one)."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        out[ctrls] = path
    return out


def test_zygote_waits_in_its_own_cgroup_and_the_launch_only_writes_limits(
    cgroup_parent: str,
) -> None:
    """A zygote is moved into a cgroup of its own while parked (a move may wait for an RCU grace
    period); the slice launched from it keeps that cgroup, with the request's limits."""
    layout = _cgroups.detect()
    _cgroups.ensure_parent(layout, cgroup_parent)
    limits = _cgroups.Limits(500, 64 << 20, 16)
    lau = _launcher.Launcher.start()
    try:
        lau.enable_zygotes(2, ("none",), _cgroups.plan(layout, "", limits, cgroup_parent))
        parked = wait_children(lau.pid, 2)
        for pid in parked:
            # The server moves a new zygote into its v1 cgroups right after the clone (which
            # already put it in its cgroup2 one): poll, it may be doing that now.
            deadline = time.monotonic() + 10
            while len(paths := {cgroup_paths(pid)[c] for c in ("memory", "pids", "")}) != 1:
                assert time.monotonic() < deadline, paths  # the same cgroup everywhere
                time.sleep(0.01)
            (path,) = paths
            parent, name = path.rsplit("/", 1)
            assert parent == f"/{cgroup_parent}" and name.startswith(lau.zygote_prefix)
        req = _launcher.LaunchRequest(
            argv=("/bin/sleep", "30"), env={}, hostname="cg", uid=254_000, gid=254_000,
            network="none", cgroup=_cgroups.plan(layout, "slice-a", limits, cgroup_parent),
        )  # fmt: skip
        launched = lau.launch_sync(req)
        assert launched.pid in parked
        assert launched.cgroup is not None and launched.cgroup.startswith(lau.zygote_prefix)
        assert cgroup_paths(launched.pid)["memory"] == f"/{cgroup_parent}/{launched.cgroup}"
        cg = _cgroups.SliceCgroup(layout, launched.cgroup, cgroup_parent)
        if layout.version == "v1":
            mem = cg.v1_dirs["memory"]
            assert int((mem / "memory.limit_in_bytes").read_text()) == 64 << 20
            assert (cg.v1_dirs["pids"] / "pids.max").read_text().strip() == "16"
            assert (cg.v1_dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert not _cgroups.SliceCgroup(layout, "slice-a", cgroup_parent).exists()
        cg.kill()
        lau.wait_sync(launched.pid)
        cg.remove()
        wait_children(lau.pid, 2)  # refilled, each in a new cgroup
        lau.enable_zygotes(0)
        lau.launch_sync(dataclasses.replace(req, argv=("/bin/true",), cgroup=None))
        # Cleared: the server killed, reaped and removed every parked zygote's cgroup.
        assert _cgroups.list_slices(layout, cgroup_parent) == set()
    finally:
        lau.close()


@pytest.mark.skipif(
    _cgroups.detect().unified is None, reason="no cgroup2 mount: nothing to clone into"
)
def test_clone_path_starts_the_slice_in_its_cgroup(cgroup_parent: str) -> None:
    """Without a zygote the server makes the slice's cgroup with its limits and clones the init
    into it (CLONE_INTO_CGROUP for the cgroup2 part, a move for v1 hierarchies)."""
    layout = _cgroups.detect()
    _cgroups.ensure_parent(layout, cgroup_parent)
    lau = _launcher.Launcher.start()
    try:
        req = _launcher.LaunchRequest(
            argv=("/bin/sleep", "30"), env={}, hostname="cg", uid=254_100, gid=254_100,
            network="none",
            cgroup=_cgroups.plan(layout, "slice-b", _cgroups.Limits(pids=8), cgroup_parent),
        )  # fmt: skip
        launched = lau.launch_sync(req)
        assert launched.cgroup == "slice-b"
        paths = cgroup_paths(launched.pid)
        assert paths[""] == paths["pids"] == f"/{cgroup_parent}/slice-b"
        cg = _cgroups.SliceCgroup(layout, "slice-b", cgroup_parent)
        assert launched.pid in cg.pids()
        cg.kill()
        lau.wait_sync(launched.pid)
        cg.remove()
    finally:
        lau.close()


async def test_cgroups_of_zygotes_killed_with_their_server_are_swept(
    cgroup_parent: str, shared_dir: Path
) -> None:
    """A SIGKILLed fork server cannot remove its zygotes' cgroups: the next agent's recovery
    does, and leaves the cgroups of its own fork server's zygotes alone."""
    layout = _cgroups.detect()
    _cgroups.ensure_parent(layout, cgroup_parent)
    lau = _launcher.Launcher.start()
    try:
        lau.enable_zygotes(
            2, ("none",), _cgroups.plan(layout, "", _cgroups.Limits(), cgroup_parent)
        )
        parked = wait_children(lau.pid, 2)
        os.kill(lau.pid, signal.SIGKILL)
        assert gone(parked)
    finally:
        lau.close()
    left = _cgroups.list_slices(layout, cgroup_parent)
    assert len(left) == 2 and all(n.startswith(lau.zygote_prefix) for n in left)
    lau2 = _launcher.Launcher.start()
    try:
        rt = _runtime.SliceRuntime(
            shared_dir / "state", lau2, cgroup_parent=cgroup_parent, netns_pool_size=0
        )
        async with rt:
            wait_children(lau2.pid, 4)  # 2 for network none, 2 for host
            assert await rt.recover() == []
            now = _cgroups.list_slices(layout, cgroup_parent)
            assert len(now) == 4 and all(n.startswith(lau2.zygote_prefix) for n in now)
        assert _cgroups.list_slices(layout, cgroup_parent) == set()
    finally:
        lau2.close()
