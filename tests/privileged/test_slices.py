"""Real slices as root: isolation, limits, secrets, network none, stop, and agent-crash recovery."""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from runink.agent import _cgroups, _launcher, _logs, _runtime

pytestmark = pytest.mark.privileged
PR_SET_CHILD_SUBREAPER = 36
PY = "/usr/bin/python3"  # reachable by the slices' unprivileged host uids


def spec(name: str, command: list[str], **kw: object) -> _runtime.SliceSpec:
    return _runtime.SliceSpec(
        name=name,
        herd="test",
        uid=uuid.uuid4().hex,
        command=tuple(command),
        **kw,  # type: ignore[arg-type]
    )


def py(code: str) -> list[str]:
    return [PY, "-I", "-S", "-c", textwrap.dedent(code)]


async def wait_for_line(rt: _runtime.SliceRuntime, sid: str, text: str) -> list[str]:
    async with asyncio.timeout(20):
        while True:
            lines = _logs.tail(rt.log_dir(sid))
            if any(text in ln for ln in lines):
                return lines
            await asyncio.sleep(0.02)


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def out(rt: _runtime.SliceRuntime, sid: str) -> list[str]:
    return [ln.split(" ", 3)[3] for ln in _logs.tail(rt.log_dir(sid)) if " stdout " in ln]


async def test_slice_is_isolated_and_uids_differ(runtime: _runtime.SliceRuntime) -> None:
    script = (
        "echo pid=$$; echo host=$(hostname); echo init=$(tr '\\0' ' ' < /proc/1/cmdline);"
        " echo pidns=$(readlink /proc/self/ns/pid); echo secret > /tmp/mine; ls /tmp;"
        " echo ready; exec sleep 60"
    )
    a, b = spec("alpha", ["sh", "-c", script]), spec("beta", ["sh", "-c", script])
    pa = await runtime.start(a)
    pb = await runtime.start(b)
    la = await wait_for_line(runtime, a.id, "ready")
    await wait_for_line(runtime, b.id, "ready")
    text = "\n".join(la)
    assert "pid=2" in text  # the step is the first child of the slice's own init
    assert "_forkserver.py" in text  # ... and PID 1 of that pid namespace is our reaper
    assert "host=alpha" in text
    assert f"pidns={os.readlink('/proc/self/ns/pid')}" not in text
    assert os.readlink(f"/proc/{pa}/ns/pid") != os.readlink("/proc/self/ns/pid")
    ua, ub = host_uid(pa), host_uid(pb)
    assert ua != 0 and ub != 0 and ua != ub
    assert not Path("/tmp/mine").exists() or Path("/tmp/mine").read_text() != "secret\n"
    la_tmp = [ln for ln in out(runtime, a.id) if ln == "mine"]
    assert la_tmp == ["mine"]  # its own /tmp held only its own file
    oa = await runtime.stop(a.id, grace=5)
    ob = await runtime.stop(b.id, grace=5)
    assert oa.reason == "Stopped" and ob.reason == "Stopped"
    assert oa.signal == signal.SIGTERM


async def test_memory_hog_is_oom_killed(runtime: _runtime.SliceRuntime) -> None:
    s = spec(
        "hog",
        py("b = []\nwhile True: b.append(bytearray(8 << 20))"),
        resources=_runtime.Resources(memory_bytes=64 << 20),
    )
    await runtime.start(s)
    o = await runtime.wait(s.id)
    assert o.oom_killed and o.reason == "OOMKilled"
    assert o.signal == signal.SIGKILL


async def test_fork_bomb_stops_at_pids_max(runtime: _runtime.SliceRuntime) -> None:
    s = spec(
        "bomb",
        py(
            """
            import os, time
            n = 0
            while n < 1000:
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
            print("forked", n, flush=True)
            """
        ),
        resources=_runtime.Resources(pids=16),
    )
    await runtime.start(s)
    o = await runtime.wait(s.id)
    assert o.reason == "Completed"
    forked = int(out(runtime, s.id)[-1].split()[1])
    assert 0 < forked <= 14  # 16 minus the init and the step itself


async def test_cpu_hog_limited_to_half_a_core(runtime: _runtime.SliceRuntime) -> None:
    s = spec(
        "cpu",
        py(
            """
            import os, time
            t0, c0 = time.monotonic(), os.times()
            while time.monotonic() - t0 < 2.0:
                pass
            c1 = os.times()
            print("share", (c1.user + c1.system - c0.user - c0.system) / (time.monotonic() - t0))
            """
        ),
        resources=_runtime.Resources(cpu_millicores=500),
    )
    await runtime.start(s)
    o = await runtime.wait(s.id)
    assert o.reason == "Completed"
    share = float(out(runtime, s.id)[-1].split()[1])
    assert 0.3 <= share <= 0.7


async def test_secret_file_inside_only(runtime: _runtime.SliceRuntime) -> None:
    s = spec(
        "sec",
        [
            "sh",
            "-c",
            'cat "$RUNINK_SECRETS_DIR/token"; echo; stat -c "%a" "$RUNINK_SECRETS_DIR/token";'
            ' echo "env=${TOKEN_ENV:-unset}"; echo ready; exec sleep 60',
        ],
        secrets={"token": b"hunter2"},
    )
    pid = await runtime.start(s)
    await wait_for_line(runtime, s.id, "ready")
    lines = out(runtime, s.id)
    assert lines[:3] == ["hunter2", "400", "env=unset"]
    host_path = Path(runtime.secrets_dir) / "token"
    assert not host_path.exists()
    inside = Path(f"/proc/{pid}/root{runtime.secrets_dir}/token").stat()
    assert inside.st_uid == host_uid(pid) != 0
    await runtime.stop(s.id, grace=2)


async def test_secret_as_env_only_when_asked(runtime: _runtime.SliceRuntime) -> None:
    s = spec(
        "secenv",
        ["sh", "-c", 'echo "env=$TOKEN_ENV"'],
        secrets={"token": b"hunter2"},
        secret_env={"TOKEN_ENV": "token"},
    )
    await runtime.start(s)
    await runtime.wait(s.id)
    assert out(runtime, s.id) == ["env=hunter2"]


async def test_network_none_cannot_reach_host_loopback(runtime: _runtime.SliceRuntime) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    try:
        s = spec(
            "net",
            py(
                f"""
                import socket
                try:
                    socket.create_connection(("127.0.0.1", {port}), timeout=2)
                    print("connected")
                except OSError as e:
                    print("refused", type(e).__name__)
                """
            ),
            network="none",
        )
        await runtime.start(s)
        await runtime.wait(s.id)
        assert out(runtime, s.id)[0].startswith("refused")
        srv.setblocking(False)
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()


async def test_stop_grace_then_kill_whole_tree(runtime: _runtime.SliceRuntime) -> None:
    s = spec(
        "stubborn",
        ["sh", "-c", "trap '' TERM; sleep 100 & sleep 100 & echo ready; wait"],
    )
    await runtime.start(s)
    await wait_for_line(runtime, s.id, "ready")
    cg = runtime.cgroup(s.id)
    assert len(cg.pids()) >= 4  # init, sh, two sleeps
    o = await runtime.stop(s.id, grace=0.5)
    assert o.reason == "Stopped"
    assert not cg.exists()


async def test_stop_lets_a_graceful_step_finish(runtime: _runtime.SliceRuntime) -> None:
    s = spec(
        "polite",
        py(
            """
            import os, signal, sys, time
            # os.write: SIGTERM may land while print("ready") is still flushing.
            signal.signal(signal.SIGTERM, lambda *a: (os.write(1, b"bye\\n"), sys.exit(0)))
            print("ready", flush=True)
            time.sleep(60)
            """
        ),
    )
    await runtime.start(s)
    await wait_for_line(runtime, s.id, "ready")
    o = await runtime.stop(s.id, grace=10)
    assert o.exit_code == 0 and o.reason == "Stopped", _logs.tail(runtime.log_dir(s.id))
    assert out(runtime, s.id)[-1] == "bye"


async def test_python_step_results(runtime: _runtime.SliceRuntime, shared_dir: Path) -> None:
    mod = shared_dir / "mystep.py"
    mod.write_text(
        "def run(ctx):\n"
        "    ctx.set_result('rows', ctx.params['n'] * 2)\n"
        "    ctx.metric('rows_total', 3)\n"
        "    return 'ok'\n"
    )
    s = _runtime.SliceSpec(
        name="pystep",
        herd="test",
        uid=uuid.uuid4().hex,
        python="mystep:run",
        params={"n": 21},
        env={"PYTHONPATH": str(shared_dir)},
    )
    await runtime.start(s)
    o = await runtime.wait(s.id)
    assert o.reason == "Completed", _logs.tail(runtime.log_dir(s.id))
    assert o.results == {"rows": 42, "return": "ok"}


AGENT = """
import asyncio, sys, uuid
from runink.agent import _launcher, _runtime
async def main():
    lau = _launcher.Launcher.start()
    print("forkserver", lau.pid, flush=True)
    async with _runtime.SliceRuntime(sys.argv[1], lau, cgroup_parent=sys.argv[2]) as rt:
        for name, cmd in (("long", ["sleep", "60"]), ("short", ["sh", "-c", "read x < /dev/null; sleep 0.5; exit 3"])):
            pid = await rt.start(_runtime.SliceSpec(name=name, herd="t", uid=uuid.uuid4().hex, command=tuple(cmd)))
            print(name, pid, flush=True)
        await asyncio.sleep(120)
asyncio.run(main())
"""


async def test_agent_sigkill_then_recover(shared_dir: Path, cgroup_parent: str) -> None:
    state = shared_dir / "state"
    # PID 1 of this VM does not reap orphans; stand in for the agent's supervisor, which must.
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        await _crash_and_recover(state, cgroup_parent)
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


async def _crash_and_recover(state: Path, cgroup_parent: str) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(state), cgroup_parent], stdout=subprocess.PIPE, text=True
    )
    pids: dict[str, int] = {}
    try:
        assert agent.stdout is not None
        for _ in range(3):
            name, pid = agent.stdout.readline().split()
            pids[name] = int(pid)
    finally:
        agent.kill()
        agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()
    # The orphaned fork server sees EOF and exits; it is now our child to reap.
    assert os.waitpid(pids["forkserver"], 0)[0] == pids["forkserver"]
    # The short slice ends while no agent runs; its init writes the status file anyway.
    deadline = asyncio.get_running_loop().time() + 10
    while _runtime._proc_starttime(pids["short"]) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    lau = _launcher.Launcher.start()
    try:
        async with _runtime.SliceRuntime(state, lau, cgroup_parent=cgroup_parent) as rt:
            found = {r.name: r for r in await rt.recover()}
            assert found["long"].running
            short = found["short"]
            assert not short.running and short.outcome is not None
            assert short.outcome.exit_code == 3 and short.outcome.reason == "Error"
            o = await rt.stop(found["long"].id, grace=2)
            assert o.reason == "Stopped"
    finally:
        lau.close()
    layout = _cgroups.detect()
    assert _cgroups.list_slices(layout, cgroup_parent) == set()
    for name in ("long", "short"):
        assert not Path(f"/proc/{pids[name]}").exists(), f"{name} init left behind"
    leftovers = subprocess.run(["pgrep", "-f", "sleep 60"], capture_output=True, text=True)
    for pid in leftovers.stdout.split():
        cg = Path(f"/proc/{pid}/cgroup").read_text() if Path(f"/proc/{pid}").exists() else ""
        assert cgroup_parent not in cg


async def test_kill_whole_cgroup_with_cgroup_kill(runtime: _runtime.SliceRuntime) -> None:
    s = spec("killme", ["sh", "-c", "sleep 100 & sleep 100 & echo ready; wait"])
    await runtime.start(s)
    await wait_for_line(runtime, s.id, "ready")
    cg = runtime.cgroup(s.id)
    if cg.v2_dir is None:
        pytest.skip("no cgroup2 mount on this host")
    # The v2 core on the unified hierarchy: the same processes, and an atomic kill.
    v2_procs = set(map(int, (cg.v2_dir / "cgroup.procs").read_text().split()))
    v1_procs = set(map(int, (cg.v1_dirs["memory"] / "cgroup.procs").read_text().split()))
    assert v2_procs == v1_procs and len(v2_procs) >= 4
    cg.kill()
    o = await runtime.wait(s.id)
    assert o.signal == signal.SIGKILL and o.reason == "Signaled"
    assert not cg.exists()


async def test_kill_whole_cgroup_with_the_v1_freezer(
    shared_dir: Path, launcher: _launcher.Launcher, cgroup_parent: str
) -> None:
    """A v1-only host (no cgroup2 mount, so no cgroup.kill): every v1 hierarchy, and the kill
    freezes the slice first so that nothing forks between reading its pids and the kills."""
    layout = dataclasses.replace(_cgroups.detect(all_v1=True), unified=None)
    assert "freezer" in layout.v1 and "cpuacct" in layout.v1
    rt = _runtime.SliceRuntime(
        shared_dir / "v1", launcher, layout=layout, cgroup_parent=cgroup_parent, netns_pool_size=0
    )
    async with rt:
        s = spec("killme", ["sh", "-c", "sleep 100 & sleep 100 & echo ready; wait"])
        await rt.start(s)
        await wait_for_line(rt, s.id, "ready")
        cg = rt.cgroup(s.id)
        assert len(cg.pids()) >= 4 and (cg.v1_dirs["freezer"] / "cgroup.procs").exists()
        assert rt.usage(s.id).cpu_seconds > 0  # cpuacct: sh has run
        cg.kill()
        o = await rt.wait(s.id)
        assert o.signal == signal.SIGKILL and o.reason == "Signaled"
    assert not cg.exists()
