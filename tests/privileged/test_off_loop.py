"""The agent keeps its file and cgroup work off the event loop it shares with the API server and
the Barn, and reports each slice's start and end in as few Barn writes as it can."""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from runink import store
from runink.agent import _daemon, _runtime
from runink.store import _api

pytestmark = pytest.mark.privileged

# Audit events of calls that wait for a filesystem (or cgroupfs) and must not run on the loop.
BLOCKING = {
    "open",
    "os.mkdir",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.chmod",
    "os.chown",
    "shutil.rmtree",
    "os.truncate",
}
_recording: list[tuple[int, list[tuple[str, str]]]] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in BLOCKING and _recording:
        ident, seen = _recording[-1]
        path = str(args[0]) if args else ""
        # procfs reads (a pid's start time) are answered from memory; modules load once.
        ignored = path.startswith("/proc/") or path.endswith((".py", ".pyc"))
        if threading.get_ident() == ident and not ignored:
            seen.append((event, path))


sys.addaudithook(_hook)  # audit hooks cannot be removed; it records only inside `on_loop_io`


@pytest.fixture
def on_loop_io() -> Iterator[list[tuple[str, str]]]:
    """Filesystem calls made on this (the event loop's) thread while the test runs."""
    seen: list[tuple[str, str]] = []
    _recording.append((threading.get_ident(), seen))
    try:
        yield seen
    finally:
        _recording.pop()


def spec(name: str, *command: str) -> _runtime.SliceSpec:
    return _runtime.SliceSpec(name=name, herd="test", uid=uuid.uuid4().hex, command=command)


async def test_slices_start_and_end_without_file_io_on_the_loop(
    runtime: _runtime.SliceRuntime, on_loop_io: list[tuple[str, str]]
) -> None:
    specs = [spec(f"s{i}", "sh", "-c", f"echo line {i}; exit {i % 2}") for i in range(6)]
    async with asyncio.TaskGroup() as tg:
        for s in specs:
            tg.create_task(runtime.start(s))
    outcomes = [await runtime.wait(s.id) for s in specs]
    assert [o.exit_code for o in outcomes] == [0, 1, 0, 1, 0, 1]
    # Stopping one (SIGTERM, then the cgroup kill) and forgetting it stay off the loop too.
    long = spec("long", "sleep", "60")
    await runtime.start(long)
    assert (await runtime.stop(long.id, grace=0.2)).reason == "Stopped"
    assert await runtime.aforget(long.id)
    assert on_loop_io == []
    # What the run left: logs on disk, no scratch (state, work dir, FIFOs) once slices ended.
    assert (runtime.log_dir(specs[3].id) / "current.log").read_text().endswith(" F line 3\n")
    assert list(runtime.scratch_dir.iterdir()) == []


async def test_scratch_is_on_tmpfs_and_outside_the_state_dir(
    runtime: _runtime.SliceRuntime,
) -> None:
    s = spec("scratch", "sleep", "60")
    await runtime.start(s)
    scratch = runtime.scratch_dir / s.id
    assert (scratch / _runtime.STATE_FILE).exists() and (scratch / "work").is_dir()
    assert not (runtime.state_dir / s.id / _runtime.STATE_FILE).exists()
    if _runtime._fs_type("/dev/shm") == "tmpfs":
        assert _runtime._fs_type(str(scratch)) == "tmpfs"
    await runtime.stop(s.id, grace=0.2)
    assert not scratch.exists()


class _Seen(Exception):
    """Every status write the test waits for has been seen."""


class _SlowToAnswer:
    """The Barn, except that the agent's read before its Running write of slice *name* answers
    only once that slice has exited: the agent then reports the end instead."""

    def __init__(self, barn: Any, runtime: _runtime.SliceRuntime, name: str) -> None:
        self._barn, self._runtime, self._name = barn, runtime, name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._barn, attr)

    async def get(self, kind: str, name: str, herd: str | None = None, **kw: Any) -> _api.Obj:
        sid = self._runtime.find(herd or "", name)
        if kind == "Slice" and name == self._name and sid in self._runtime.running():
            assert sid is not None
            await self._runtime.wait(sid)
        obj: _api.Obj = await self._barn.get(kind, name, herd, **kw)
        return obj


async def test_one_status_write_per_transition(runtime: _runtime.SliceRuntime) -> None:
    barn = store.open_memory()
    client = _SlowToAnswer(barn, runtime, "quick")
    agent = _daemon.Agent(client, runtime, _daemon.AgentConfig("node-a", heartbeat_interval=60))
    written: dict[str, list[dict[str, Any]]] = {"quick": [], "slow": []}

    async def record(since: _api.Revision) -> None:
        async for ev in barn.watch("Slice", "team", since=since):
            if ev.type == "MODIFIED" and ev.object.get("status"):
                written[ev.object["metadata"]["name"]].append(ev.object["status"])
                if all(w and w[-1]["phase"] == "Succeeded" for w in written.values()):
                    return

    try:
        rev = (await barn.list("Slice")).revision
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            tg.create_task(agent.run())
            watcher = tg.create_task(record(rev))
            for name, cmd in (("quick", ["true"]), ("slow", ["sleep", "0.5"])):
                obj = {
                    "apiVersion": "runink.io/v1",
                    "kind": "Slice",
                    "metadata": {"name": name, "herd": "team"},
                    "spec": {
                        "pipeline": "p",
                        "run": "r",
                        "step": "s",
                        "command": cmd,
                        "nodeName": "node-a",
                        "network": "none",
                        "attempt": 2,
                    },
                }
                await barn.create(obj)
            await watcher
            raise _Seen  # stops the agent: the TaskGroup cancels it
    except* _Seen:
        pass
    finally:
        await barn.close()
    # No Starting: Running (with when and which attempt), then the end.
    assert [w["phase"] for w in written["slow"]] == ["Running", "Succeeded"]
    running, done = written["slow"]
    assert running["attempt"] == done["attempt"] == 2
    assert running["startTime"] == done["startTime"]
    # Exited before the agent reported it running: a single write, the final one.
    assert [w["phase"] for w in written["quick"]] == ["Succeeded"]
    assert written["quick"][0]["attempt"] == 2 and written["quick"][0]["exitCode"] == 0
