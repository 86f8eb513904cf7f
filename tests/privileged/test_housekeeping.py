"""Finished slices' state and log dirs are deleted once their Slice is gone or after the retention
time; a running slice's never is."""

from __future__ import annotations

import time
import uuid

import pytest

from runink.agent import _runtime

pytestmark = pytest.mark.privileged


def spec(name: str, *command: str) -> _runtime.SliceSpec:
    return _runtime.SliceSpec(name=name, herd="test", uid=uuid.uuid4().hex, command=command)


async def test_dirs_go_when_the_slice_is_gone_or_old_but_never_while_running(
    runtime: _runtime.SliceRuntime,
) -> None:
    done_a, done_b, busy = (
        spec("a", "/bin/true"),
        spec("b", "/bin/true"),
        spec("c", "/bin/sleep", "60"),
    )
    for s in (done_a, done_b):
        await runtime.start(s)
        assert (await runtime.wait(s.id)).reason == "Completed"
    await runtime.start(busy)
    root = runtime.state_dir
    assert {p.name for p in root.iterdir()} >= {done_a.id, done_b.id, busy.id}

    # Only b's Slice still exists: a's dir goes, b's stays (within retention), and the running
    # slice's stays although no Slice lists it.
    assert runtime.housekeep(keep={done_b.id}, retention=3600) == [done_a.id]
    assert not (root / done_a.id).exists()
    assert (runtime.log_dir(done_b.id) / "current.log").exists()
    assert runtime.find("test", "a") is None

    # Past the retention time b goes too, although its Slice still exists.
    assert runtime.housekeep(keep={done_b.id}, retention=3600, now=time.time() + 3601) == [
        done_b.id
    ]
    assert runtime.forget(busy.id) is False
    assert (root / busy.id).exists()
